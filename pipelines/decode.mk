# Decoding evidence (docs/results.md "Decoding policies"): unmasking policies at equal NFE, the threshold /
# entropy-bounded NFE ↔ Gen PPL curves and DiD with each policy per stage, on the shipped demo model.
#   make decode-results         (release build; ~18 min on 2 shared cores; cells cached in out/decode/)
decode-results: build
	BIN=$(BIN) pipelines/decode/run.sh
	python3 pipelines/decode/report.py out/decode results/decode

.PHONY: decode-results
