# Decoding evidence (docs/results.md "Decoding policies"): unmasking policies at equal NFE, the threshold /
# entropy-bounded NFE ↔ Gen PPL curves and DiD with each policy per stage.
#   make decode-results         on the small demo model (data/demo; ~18 min on 2 shared cores; cells in out/decode/)
#   make decode-results-medium  on the medium model (data/medium, L = 256; cells in out/decode-medium/)
decode-results: build
	BIN=$(BIN) pipelines/decode/run.sh
	python3 pipelines/decode/report.py out/decode results/decode

DECODE_MEDIUM_ENV = DECODE=out/decode-medium DECODE_L=256 DECODE_MODEL=data/medium/mix.safetensors \
    DECODE_SCORER=data/medium/ar.safetensors DECODE_TITLE="the medium model" DECODE_TARGET=decode-results-medium
decode-results-medium: build
	@test -s data/medium/mix.safetensors || { echo "decode-results-medium: data/medium/mix.safetensors is missing (make -j2 medium-ship)" >&2; exit 1; }
	$(DECODE_MEDIUM_ENV) BIN=$(BIN) pipelines/decode/run.sh
	$(DECODE_MEDIUM_ENV) python3 pipelines/decode/report.py out/decode-medium results/medium/decode

.PHONY: decode-results decode-results-medium
