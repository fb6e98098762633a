// Turns `train`'s command-line request into a ready Trainer: reads the data, checks the usage
// (block size divides L, known names, --set keys), builds or restores the model, and resumes an
// interrupted run found in RUN_DIR. Usage mistakes throw `UsageError` (the CLI maps it to
// exit 64); runtime problems throw `ToolError` (exit 1).
import Foundation


public struct TrainRequest: Sendable {
    public var data = ""
    public var valid: String? = nil
    public var algorithm: Algorithm = .bd3
    public var blockSize = 4
    /// `--block-mix` spec (bd3): see `BlockMix.parse`. Overrides `blockSize` (which becomes the draft size).
    public var blockMix: String? = nil
    public var configName = "cpu"
    public var sets: [String] = []
    public var steps = 1000
    public var batch = 8
    public var accumulate = 1
    public var lr = 3e-4
    public var warmup = 2500
    public var cosine = false
    public var schedule = "loglinear"
    public var reweight = "none"
    public var clipSearch = false
    public var clip: String? = nil
    public var initPath: String? = nil
    public var seed: UInt64 = 1
    public var valEvery = 0
    public var valBatches = 100
    public var saveEvery = 500
    public var runDir = ""
    /// `--precision`: fp32 or bf16 (matmul operands; see Model/Precision.swift).
    public var precision = "fp32"
    public init() {}
}

public enum TrainSetup {
    /// Keys accepted by `--set key=value`.
    public static let modelKeys = ["hidden_size", "n_blocks", "n_heads", "cond_dim", "dropout"]
    public static let trainingKeys = ["ema", "grad_clip", "weight_decay", "resample", "antithetic", "tuned_rule", "ignore_bos", "sedd_noise",
                                      "mu", "sigma", "p_min", "w1", "mu1", "sigma1", "sigma2", "m_start", "m_end", "tau_scale"]

    public static func parseInterval(_ s: String) throws -> ClipInterval { try ClipInterval.parse(s) }

    /// Returns the trainer and a one-line description of how it started (fresh / init / resumed).
    public static func make(_ r: TrainRequest) throws -> (Trainer, String) {
        try r.validate()
        let sets = try SetOverrides(r.sets)
        let (train, valid) = try loadData(r)
        let L = train.length
        let mix = try r.blockMix.map { try BlockMix.parse($0, length: L) }
        if r.algorithm == .bd3 && mix == nil && L % r.blockSize != 0 {
            throw UsageError("--block-size \(r.blockSize) does not divide the sequence length \(L)")
        }
        guard let precision = Precision(rawValue: r.precision) else {
            throw UsageError("--precision must be fp32 or bf16, got '\(r.precision)'")
        }
        if r.algorithm == .ar && L < 2 { throw UsageError("AR training needs sequences of at least 2 tokens") }
        var o = try trainOptions(r, sets: sets, length: L, mix: mix)
        o.precision = precision
        if r.clipSearch, let largest = (mix?.sizes ?? [o.blockSize]).max(), r.batch * (L / largest) < 2 {
            throw UsageError("--clip-search compares the variance across the blocks of a validation batch, and a batch of \(r.batch) row(s) of \(L) tokens at block size \(largest) holds one block: use --batch 2 or more")
        }

        // Checkpoint temp files of an earlier run killed while saving (SIGKILL, OOM) are garbage.
        for name in ["last.safetensors", "best.safetensors", "last.optim.safetensors"] { sweepStaleTempFiles(for: r.runDir + "/" + name) }
        // Model config: resumed run > --init checkpoint > named config; then --set overrides.
        let resuming = FileManager.default.fileExists(atPath: r.runDir + "/last.optim.safetensors")
        let config = try modelConfig(r, sets: sets, resuming: resuming, length: L, vocabSize: train.header.vocabSize)
        let tokens = Double(r.batch) * Double(BatchLoss.inputLength(r.algorithm, length: L))
        try requireMemory(tokens * Double(config.vocabSize + 3 * config.hiddenSize) * 4,
                          for: "a micro-batch of \(r.batch) rows of \(L) tokens (logits, activations and their gradients)",
                          fix: "lower --batch and raise --accumulate")
        let model = DiT(config: config, maxBatch: r.batch, maxTokens: BatchLoss.inputLength(r.algorithm, length: L))
        model.initialize(seed: r.seed)
        model.precision = precision
        let trainer = Trainer(model: model, options: o, train: train, valid: valid)
        trainer.world = try World.join()
        if resuming {
            try trainer.resume(runDir: r.runDir)
            return (trainer, "resuming \(r.runDir) at step \(trainer.step)")
        }
        if let ip = r.initPath {
            try trainer.initialize(from: ip, overrides: try initOverrides(r))
            return (trainer, "initialised from \(ip)")
        }
        return (trainer, "fresh \(config.nBlocks)-layer model, \(model.parameterCount) parameters" + (mix.map { ", block mix \($0)" } ?? "")
                + (trainer.world.map { ", \($0.size) data-parallel ranks" } ?? ""))
    }

    /// The training and validation rows, checked against each other and the algorithm.
    static func loadData(_ r: TrainRequest) throws -> (SequenceData, SequenceData?) {
        let train = try SequenceData.load(path: r.data)
        let valid = try r.valid.map { try SequenceData.load(path: $0) }
        if let v = valid {
            guard v.header.tokenizerFingerprint == train.header.tokenizerFingerprint, v.header.vocabSize == train.header.vocabSize else {
                throw ToolError("\(r.valid!): tokenizer differs from the training data's; tokenize both with the same tokenizer")
            }
            guard v.length == train.length else {
                throw ToolError("\(r.valid!): rows have \(v.length) tokens, training rows \(train.length); pack both with the same --seq-len")
            }
        }
        guard train.header.special.mask >= 0 || r.algorithm == .ar else {
            throw ToolError("\(r.data): the stream declares no mask token; diffusion training needs one (tokenizer with [MASK])")
        }
        return (train, valid)
    }

    /// The Trainer's options: the request's numbers, the noise schedule with its --set parameters, the loss.
    static func trainOptions(_ r: TrainRequest, sets: SetOverrides, length L: Int, mix: BlockMix?) throws -> TrainOptions {
        var o = TrainOptions()
        o.algorithm = r.algorithm; o.blockSize = r.algorithm == .bd3 ? r.blockSize : (r.algorithm == .ar ? 1 : L)
        if let m = mix { o.blockMix = m; o.blockSize = m.draftSize }
        o.steps = r.steps; o.batch = r.batch; o.accumulate = r.accumulate; o.lr = r.lr; o.warmup = r.warmup
        o.cosine = r.cosine; o.schedule = try schedule(r, sets: sets); o.reweighting = Reweighting.named(r.reweight)!
        o.clipSearch = r.clipSearch
        if let c = r.clip { o.interval = try ClipInterval.parse(c) }
        o.seed = r.seed; o.valEvery = r.valEvery; o.valBatches = r.valBatches; o.saveEvery = r.saveEvery
        if let x = try sets.number("ema") { o.emaDecay = x }
        if let x = try sets.number("grad_clip") { o.gradClip = x }
        if let x = try sets.number("weight_decay") { o.weightDecay = x }
        if let x = try sets.flag("resample") { o.resample = x }
        if let x = try sets.flag("antithetic") { o.antithetic = x }
        if let x = try sets.flag("ignore_bos") { o.ignoreBOS = x }
        if let v = sets["sedd_noise"] { o.seddNoise = SEDDNoise(rawValue: v)! }
        if let v = sets["tuned_rule"] { o.tunedRule = TunedRule(rawValue: v)! }
        return o
    }

    /// The named noise schedule with the parameters given by --set.
    static func schedule(_ r: TrainRequest, sets: SetOverrides) throws -> NoiseSchedule {
        guard var schedule = NoiseSchedule.named(r.schedule) else {
            throw UsageError("unknown --schedule '\(r.schedule)'; use loglinear, square, square_root, log, cosine, gaussian or bimodal_gaussian")
        }
        if case .gaussian(var g) = schedule {
            if let x = try sets.number("mu") { g.mu = x }; if let x = try sets.number("sigma") { g.sigma = x }
            if let x = try sets.number("p_min") { g.pMin = x }
            schedule = .gaussian(g)
        }
        if case .bimodal(var b) = schedule {
            if let x = try sets.number("w1") { b.w1 = x }; if let x = try sets.number("mu1") { b.mu1 = x }
            if let x = try sets.number("sigma1") { b.sigma1 = x }; if let x = try sets.number("sigma2") { b.sigma2 = x }
            if let x = try sets.number("m_start") { b.mStart = x }; if let x = try sets.number("m_end") { b.mEnd = x }
            if let x = try sets.number("tau_scale") { b.tauScale = x }; if let x = try sets.number("p_min") { b.pMin = x }
            schedule = .bimodal(b)
        }
        return schedule
    }

    /// The model: the resumed run's, the --init checkpoint's (at the data's length), or a named config with
    /// --set overrides; checked against the data and the algorithm.
    static func modelConfig(_ r: TrainRequest, sets: SetOverrides, resuming: Bool, length L: Int, vocabSize: Int) throws -> ModelConfig {
        var config: ModelConfig
        if resuming {
            config = try Checkpoint.open(r.runDir + "/last.safetensors").info.config
        } else if let ip = r.initPath {
            config = try Checkpoint.open(ip, overrides: try initOverrides(r)).info.config
            config.length = L
        } else {
            guard let c = ModelConfig.named(r.configName, vocabSize: vocabSize) else {
                throw UsageError("unknown --config '\(r.configName)'; use \(ModelConfig.names.joined(separator: ", "))")
            }
            config = c
            config.length = L
            config.causal = r.algorithm == .ar
            config.timeConditioning = r.algorithm == .sedd   // SEDD: σ(t) drives adaLN
            if let x = try sets.number("hidden_size") { config.hiddenSize = Int(x) }
            if let x = try sets.number("n_blocks") { config.nBlocks = Int(x) }
            if let x = try sets.number("n_heads") { config.nHeads = Int(x) }
            if let x = try sets.number("cond_dim") { config.condDim = Int(x) }
            if let x = try sets.number("dropout") { config.dropout = Float(x) }
        }
        guard config.vocabSize == vocabSize else {
            throw ToolError("the checkpoint's vocabulary (\(config.vocabSize)) differs from the data's (\(vocabSize)); tokenize with the checkpoint's tokenizer")
        }
        guard config.causal == (r.algorithm == .ar) else {
            throw UsageError("--algo \(r.algorithm.rawValue) does not match the checkpoint's model (\(config.causal ? "causal AR" : "diffusion"))")
        }
        guard config.timeConditioning == (r.algorithm == .sedd) else {
            throw UsageError("--algo \(r.algorithm.rawValue) does not match the checkpoint's model (\(config.timeConditioning ? "time-conditioned SEDD" : "not time-conditioned"))")
        }
        do { try config.validate() } catch { throw UsageError("\(error)") }
        return config
    }

    /// What a reference state_dict given to --init lacks (heads, length, ids) comes from --config/--set like any run.
    static func initOverrides(_ r: TrainRequest) throws -> CheckpointOverrides {
        var o = try CheckpointOverrides.parse(algo: nil, blockSize: nil, config: nil, sets: r.sets, ignoreUnknown: true)
        o.forWeights = true
        o.algorithm = r.algorithm
        if r.configName != "cpu" { o.configName = r.configName }
        return o
    }
}

extension TrainRequest {
    /// The default --warmup for a run of `steps` steps: the reference's 2500, but at most a tenth of the run
    /// (a 1000-step run would otherwise never reach its peak learning rate).
    public static func defaultWarmup(steps: Int) -> Int { min(2500, steps / 10) }

    /// Every check that needs no file (exit 64): ranges, names and combinations. `TrainSetup.make` calls it
    /// first; the checks against the data (block size divides L, ...) follow there.
    public func validate() throws {
        try checkRange(steps, 0...Limits.steps, "--steps")
        try checkRange(batch, 1...Limits.batch, "--batch")
        try checkRange(accumulate, 1...Limits.batch, "--accumulate")
        guard lr > 0, lr.isFinite else { throw UsageError("--lr must be a finite number > 0 (got \(lr))") }
        try checkRange(warmup, 0...Limits.steps, "--warmup")
        try checkRange(valEvery, 0...Limits.steps, "--val-every", "0 = only at the end")
        try checkRange(valBatches, 1...Limits.count, "--val-batches")
        try checkRange(saveEvery, 0...Limits.steps, "--save-every", "0 = only at the end")
        guard !runDir.isEmpty else { throw UsageError("missing -o RUN_DIR") }
        if clipSearch {
            guard algorithm == .bd3 else { throw UsageError("--clip-search applies to --algo bd3 only") }
            guard valid != nil else { throw UsageError("--clip-search measures Var-NELBO on validation data; add --valid") }
        }
        if let c = clip { _ = try ClipInterval.parse(c) }
        if blockMix != nil {
            guard algorithm == .bd3 else { throw UsageError("--block-mix applies to --algo bd3 only") }
        } else if algorithm == .bd3 {
            try checkRange(blockSize, 1...Limits.length, "--block-size")
        }
        let sets = try SetOverrides(self.sets)
        _ = try TrainSetup.schedule(self, sets: sets)
        guard let reweighting = Reweighting.named(reweight) else {
            throw UsageError("unknown --reweight '\(reweight)'; use none, edm, iddpm, sigmoid, sigmoid:K, fm or simple")
        }
        if algorithm == .sedd {
            guard reweighting == .none else { throw UsageError("--reweight applies to ar/mdlm/bd3; SEDD weights its loss by dσ(t)") }
            guard schedule == "loglinear" else {
                throw UsageError("--schedule applies to mdlm/bd3; for sedd choose σ(t) with --set sedd_noise=bd3lms|loglinear")
            }
        } else if sets["sedd_noise"] != nil {
            throw UsageError("--set sedd_noise applies to --algo sedd only")
        }
        if let v = sets["sedd_noise"], SEDDNoise(rawValue: v) == nil { throw UsageError("--set sedd_noise must be bd3lms or loglinear") }
        if let v = sets["tuned_rule"], TunedRule(rawValue: v) == nil { throw UsageError("--set tuned_rule must be exact or reference") }
        for k in ["ema", "grad_clip", "weight_decay", "dropout"] { _ = try sets.number(k) }
        for k in ["hidden_size", "n_blocks", "n_heads", "cond_dim"] {
            if let x = try sets.number(k), x != x.rounded() || x < 1 || x > 65536 {
                throw UsageError("--set \(k) must be a whole number in 1...65536 (got \(sets[k]!))")
            }
        }
        for k in ["resample", "antithetic", "ignore_bos"] { _ = try sets.flag(k) }
        if initPath == nil && !ModelConfig.names.contains(configName) {
            throw UsageError("unknown --config '\(configName)'; use \(ModelConfig.names.joined(separator: ", "))")
        }
    }
}

/// `--set key=value` overrides, keys checked against TrainSetup's lists.
struct SetOverrides {
    let values: [String: String]

    init(_ items: [String]) throws {
        var v: [String: String] = [:]
        for s in items {
            guard let eq = s.firstIndex(of: "=") else { throw UsageError("--set takes key=value, got '\(s)'") }
            let k = String(s[..<eq])
            guard TrainSetup.modelKeys.contains(k) || TrainSetup.trainingKeys.contains(k) else {
                throw UsageError("unknown --set key '\(k)'; known: \((TrainSetup.modelKeys + TrainSetup.trainingKeys).joined(separator: ", "))")
            }
            v[k] = String(s[s.index(after: eq)...])
        }
        values = v
    }

    subscript(_ k: String) -> String? { values[k] }

    func number(_ k: String) throws -> Double? {
        guard let v = values[k] else { return nil }
        guard let d = Double(v), d.isFinite else { throw UsageError("--set \(k)=\(v): not a finite number") }
        return d
    }

    func flag(_ k: String) throws -> Bool? {
        guard let v = values[k] else { return nil }
        switch v.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw UsageError("--set \(k)=\(v): expected true or false")
        }
    }
}
