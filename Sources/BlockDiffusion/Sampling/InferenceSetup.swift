// What the sampling tools set up once per run before their engines: the weights at the chosen dtype and the
// default batch size.
//
//   prepareInference(checkpoint, dtype): fp32 = the checkpoint model's parameters read in place; bf16 = every matrix
//     rounded to bf16 once (InferenceWeights), then the fp32 parameters are returned to the OS, so only the bf16
//     copy stays resident. The checkpoint's model must not run afterwards (its forward refuses); every engine of
//     the run reads the returned weights. A checkpoint opened with dtype bf16 already holds them (made while
//     loading, the lower peak): they are returned as they are.
//   automaticBatch: the --batch default: as many sequences as the KV caches + scratch of a batch fit in half the
//     available memory, at most `limit` (the number of samples) and at most 32 (the products run at compute
//     speed from about 16 rows per weight pass; more only costs memory).
//
// Public API:
//   prepareInference(_:dtype:) throws -> InferenceWeights? (nil: SEDD at fp32), sequenceBytes, automaticBatch(config:window:chunk:limit:)
import Foundation

public func prepareInference(_ ck: SamplingCheckpoint, dtype: WeightDType) throws -> InferenceWeights? {
    if ck.config.timeConditioning {
        // SEDD samples through the model itself (σ-dependent adaLN).
        guard dtype == .fp32 else { throw UsageError("--dtype bf16 is for BD3-LM, MDLM and AR checkpoints (this one is SEDD)") }
        return nil
    }
    if let w = ck.weights, w.dtype == dtype { return w }
    let w = try InferenceWeights(model: ck.model, dtype: dtype)   // refused if the model was released at load
    if dtype != .fp32 { ck.model.releaseParameters() }
    return w
}

/// Bytes one sequence of a batch costs in CachedDiT: K/V caches of every layer + chunk scratch + logits rows.
public func sequenceBytes(config c: ModelConfig, window: Int, chunk: Int) -> Int {
    4 * (2 * c.nBlocks * window * c.hiddenSize + chunk * (16 * c.hiddenSize + c.vocabSize) + chunk * window)
}

public func automaticBatch(config: ModelConfig, window: Int, chunk: Int, limit: Int) -> Int {
    let avail = availableMemory() ?? (4 << 30)
    let fit = max(1, (avail / 2) / max(1, sequenceBytes(config: config, window: window, chunk: chunk)))
    return max(1, min(limit, 32, fit))
}

/// MemAvailable of /proc/meminfo in bytes (Linux), nil elsewhere.
func availableMemory() -> Int? {
    guard let s = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
    for line in s.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
        let parts = line.split(separator: " ")
        if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
    }
    return nil
}
