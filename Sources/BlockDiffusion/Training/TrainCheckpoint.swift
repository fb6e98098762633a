// Checkpoint metadata and the resume files (layout described at the top of Trainer.swift).
//
// Weights-file __metadata__ keys (all strings), read by `score` and the sampling tools:
//   model_config (JSON ModelConfig), algo (ar|mdlm|bd3), block_size, seq_len, noise, reweight,
//   vocab_size, mask_id, bos_id, eos_id, pad_id, tokenizer_fingerprint (16 hex digits),
//   sampling_eps_min, sampling_eps_max (exact decimals; bd3 only also stores the reference's scalar
//   tensors of the same names), step, val_nll (when validated), training (JSON of TrainOptions), format=pt,
//   weights_crc32c (CheckpointDigest: CRC-32C of the tensors, verified by Checkpoint.open).
// Mixed-scale runs add block_mix (canonical `BlockMix` spelling, e.g. "bimodal:4,256,0.1"; block_size is
// then the draft size and sampling_eps_* its interval) and clip_by_block (JSON {"4":[β,ω],"256":[β,ω]},
// exact decimals), and val_nll_by_block (JSON {"4":nll,…}) when validated.
// SEDD checkpoints (algo=sedd, model_config.timeConditioning = true, block_size = L) add sedd_noise
// (bd3lms | loglinear, the σ(t) of `SEDDNoise`).
import Foundation

extension Trainer {
    public func weightsMetadata(valNLL: Double?) -> [String: String] {
        let h = train.header
        var m: [String: String] = [
            "algo": options.algorithm.rawValue, "block_size": "\(loss.objective.blockSize)", "seq_len": "\(train.length)",
            "noise": options.schedule.name, "reweight": options.reweighting.name, "vocab_size": "\(h.vocabSize)",
            "mask_id": "\(h.special.mask)", "bos_id": "\(h.special.bos)", "eos_id": "\(h.special.eos)", "pad_id": "\(h.special.pad)",
            "tokenizer_fingerprint": hex(h.tokenizerFingerprint), "sampling_eps_min": exact(interval.min),
            "sampling_eps_max": exact(interval.max), "step": "\(step)", "training": options.json, "format": "pt",
        ]
        // The schedule as training left it (Gaussian parameters; the bimodal's μ2 at this step's progress), so
        // `score ppl` evaluates the Var. NELBO under the schedule the model was trained with.
        let params = loss.objective.schedule.parameterString
        if !params.isEmpty { m["noise_params"] = params }
        if let v = valNLL { m["val_nll"] = exact(v) }
        if options.algorithm == .sedd { m["sedd_noise"] = options.seddNoise.rawValue }
        if let mix = options.blockMix {
            m["block_mix"] = mix.description
            m["clip_by_block"] = Trainer.intervalsJSON(intervals)
            if let byBlock = lastValidationByBlock {
                m["val_nll_by_block"] = "{" + mix.sizes.compactMap { b in byBlock[b].map { "\"\(b)\":\(exact($0))" } }
                    .joined(separator: ",") + "}"
            }
        }
        return m
    }

    /// {"4":[β,ω],…} with exact decimals, sizes ascending.
    static func intervalsJSON(_ iv: [Int: ClipInterval]) -> String {
        "{" + iv.keys.sorted().map { "\"\($0)\":[\(exact(iv[$0]!.min)),\(exact(iv[$0]!.max))]" }.joined(separator: ",") + "}"
    }

    /// Writes RUN_DIR/last.optim.safetensors then RUN_DIR/last.safetensors (and best.safetensors when `best`).
    /// In a data-parallel job only rank 0 writes (every rank holds the same state).
    public func saveCheckpoint(runDir: String, best: Bool, valNLL: Double?) throws {
        if let world, !world.isLeader { return }
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        // Order matters for a kill at any instant: the exported EMA weights first, then the optimizer file, which
        // alone holds everything a resume needs (live weights, EMA shadow, moments, RNG). Each file is replaced
        // atomically, so last.optim.safetensors is always one consistent state; last.safetensors is at most one
        // save ahead of it and is rewritten at the next save.
        // The reference's var_min buffers exist only for bd3lm (configs/algo/bd3lm.yaml): AR, MDLM and SEDD files
        // without them load with strict=True into the reference's modules.
        let scalars: [String: Float] = options.algorithm == .bd3
            ? ["sampling_eps_min": Float(interval.min), "sampling_eps_max": Float(interval.max)] : [:]
        let wm = weightsMetadata(valNLL: valNLL)
        do {
            ema.swap(with: model.parameters)
            defer { ema.swap(with: model.parameters) }
            try CheckpointDigest.save(model, path: runDir + "/last.safetensors", metadata: wm, extraScalars: scalars)
            if best { try CheckpointDigest.save(model, path: runDir + "/best.safetensors", metadata: wm, extraScalars: scalars) }
        } catch { throw ToolError("\(error)") }
        var w = SafetensorsWriter()
        let n = model.parameterCount
        w.add(name: "live", shape: [n], floats: UnsafeBufferPointer(model.parameters))
        w.add(name: "ema", shape: [n], floats: UnsafeBufferPointer(ema.shadow))
        w.add(name: "adam_m", shape: [n], floats: UnsafeBufferPointer(adam.m))
        w.add(name: "adam_v", shape: [n], floats: UnsafeBufferPointer(adam.v))
        let meta: [String: String] = [
            "step": "\(step)", "adam_step": "\(adam.step)", "ema_updates": "\(ema.updates)",
            "rng": rng.words.map { String($0) }.joined(separator: ","),
            "order_epoch": "\(order.epoch)", "order_position": "\(order.position)",
            "interval_min": exact(interval.min), "interval_max": exact(interval.max),
            "best_nll": exact(bestNLL), "training": options.json,
            "intervals": intervals.keys.sorted().map { "\($0):\(exact(intervals[$0]!.min)):\(exact(intervals[$0]!.max))" }.joined(separator: ";"), "block_mix": options.blockMix?.description ?? "none",
        ]
        do { try w.write(path: runDir + "/last.optim.safetensors", metadata: meta) } catch { throw ToolError("\(error)") }
    }

    /// Restores everything `saveCheckpoint` wrote; afterwards training continues exactly.
    public func resume(runDir: String) throws {
        let optPath = runDir + "/last.optim.safetensors", wPath = runDir + "/last.safetensors"
        let opt: SafetensorsFile
        do { opt = try SafetensorsFile(path: optPath) } catch { throw ToolError("\(error)") }
        let weights = try Checkpoint.open(wPath)
        let info = weights.info
        try info.requireCompatible(train.header, path: "training data")
        guard info.config == model.config else {
            throw ToolError("\(wPath): model config differs from this run's; use another -o directory or the same --config/--set")
        }
        guard info.blockMix == options.blockMix else {
            throw ToolError("\(wPath): was trained with block mix \(info.blockMix?.description ?? "none"), this run asks for \(options.blockMix?.description ?? "none"); resume with the same --block-mix or use --init")
        }
        guard info.algorithm == options.algorithm, info.blockSize == loss.objective.blockSize else {
            throw ToolError("\(wPath): was trained as \(info.algorithm.rawValue) with block size \(info.blockSize); resume with the same --algo/--block-size or use --init")
        }
        let m = opt.metadata
        // The optimizer file carries the EMA shadow: it alone is the resume state (last.safetensors may be one
        // save ahead after a kill between the two writes). Files from before that change need equal steps.
        let hasEMA = opt.entry("ema") != nil
        guard let s = Int(m["step"] ?? ""), hasEMA || s == info.step else {
            throw ToolError("\(optPath) and \(wPath) are from different steps; delete \(optPath) to restart from the weights with --init")
        }
        do {
            if hasEMA {
                let shadow = try opt.floats("ema")
                guard shadow.count == model.parameterCount else { throw ToolError("\(optPath): parameter count mismatch") }
                ema.restore(updates: Int(m["ema_updates"] ?? "") ?? 0, shadow: shadow)
            } else {
                try weights.load(into: model)
                ema.restore(updates: Int(m["ema_updates"] ?? "") ?? 0, shadow: Array(model.parameters))
            }
            let live = try opt.floats("live")
            guard live.count == model.parameterCount else { throw ToolError("\(optPath): parameter count mismatch") }
            _ = model.parameters.update(fromContentsOf: live)
            adam.restore(step: Int(m["adam_step"] ?? "") ?? s, m: try opt.floats("adam_m"), v: try opt.floats("adam_v"))
        } catch let e as ToolError { throw e } catch { throw ToolError("\(error)") }
        let words = (m["rng"] ?? "").split(separator: ",").compactMap { UInt64($0) }
        guard words.count == 4 else { throw ToolError("\(optPath): missing RNG state") }
        rng = Xoshiro256(words: words)
        order = BatchOrder(rows: train.count, seed: options.seed, epoch: Int(m["order_epoch"] ?? "") ?? 0,
                           position: Int(m["order_position"] ?? "") ?? 0)
        interval = ClipInterval(Double(m["interval_min"] ?? "") ?? 1e-3, Double(m["interval_max"] ?? "") ?? 1)
        // Per-size intervals "B:β:ω;…" (exact decimals, parsed with Double(String) which round-trips).
        for item in (m["intervals"] ?? "").split(separator: ";") {
            let f = item.split(separator: ":")
            if f.count == 3, let b = Int(f[0]), intervals[b] != nil, let lo = Double(f[1]), let hi = Double(f[2]) {
                intervals[b] = ClipInterval(lo, hi)
            }
        }
        bestNLL = Double(m["best_nll"] ?? "") ?? .infinity
        step = s
    }

    /// `--init`: starts from another checkpoint's weights (e.g. pretrained at L' = L, fine-tuned at L' = 4).
    /// Parameters and EMA both start from the loaded weights; the optimizer starts fresh.
    public func initialize(from path: String, overrides: CheckpointOverrides = .init()) throws {
        let ck = try Checkpoint.open(path, overrides: overrides)
        let info = ck.info
        if ck.layout == .ours { try info.requireCompatible(train.header, path: "training data") }
        else if info.vocabSize != train.header.vocabSize {
            throw ToolError("\(path): vocabulary size \(info.vocabSize) differs from the training data's \(train.header.vocabSize); tokenize with the checkpoint's tokenizer (GPT-2: docs/checkpoints.md)")
        }
        guard info.config.vocabSize == model.config.vocabSize, info.config.hiddenSize == model.config.hiddenSize,
              info.config.nBlocks == model.config.nBlocks, info.config.nHeads == model.config.nHeads,
              info.config.condDim == model.config.condDim, info.config.causal == model.config.causal else {
            throw ToolError("\(path): its model size differs from this run's; pass the same --config/--set as when it was trained")
        }
        try ck.load(into: model)
        ema.reset(to: UnsafeBufferPointer(model.parameters))
    }
}

