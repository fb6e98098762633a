// The four model families: AR (L'=1, causal), MDLM (L'=L), BD3-LM (any L'), SEDD (score entropy).

public enum Algorithm: String, CaseIterable, Sendable {
    /// `sedd`: score-entropy discrete diffusion with time conditioning (Objectives/SEDDBatchLoss.swift);
    /// `BatchLoss` does not run it (the trainer and `score` use `SEDDBatchLoss`), it only sizes inputs.
    case ar, mdlm, bd3, sedd
}
