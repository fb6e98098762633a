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

    public static func parseInterval(_ s: String) throws -> ClipInterval {
        let parts = s.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let a = parts[0], let b = parts[1], a >= 0, b >= a, b <= 2 else {
            throw UsageError("clip interval '\(s)' must be 'min,max' with 0 ≤ min ≤ max (e.g. 0.45,0.95)")
        }
        return ClipInterval(a, b)
    }

    /// Returns the trainer and a one-line description of how it started (fresh / init / resumed).
    public static func make(_ r: TrainRequest) throws -> (Trainer, String) {
        guard r.steps >= 0, r.batch >= 1, r.accumulate >= 1, r.lr > 0, r.warmup >= 0, r.valBatches >= 1 else {
            throw UsageError("--steps, --warmup must be ≥ 0 and --batch, --accumulate, --val-batches ≥ 1, --lr > 0")
        }
        guard !r.runDir.isEmpty else { throw UsageError("missing -o RUN_DIR") }
        if r.clipSearch {
            guard r.algorithm == .bd3 else { throw UsageError("--clip-search applies to --algo bd3 only") }
            guard r.valid != nil else { throw UsageError("--clip-search measures Var-NELBO on validation data; add --valid") }
        }
        var sets: [String: String] = [:]
        for s in r.sets {
            guard let eq = s.firstIndex(of: "=") else { throw UsageError("--set takes key=value, got '\(s)'") }
            let k = String(s[..<eq]), v = String(s[s.index(after: eq)...])
            guard modelKeys.contains(k) || trainingKeys.contains(k) else {
                throw UsageError("unknown --set key '\(k)'; known: \((modelKeys + trainingKeys).joined(separator: ", "))")
            }
            sets[k] = v
        }
        func num(_ k: String) throws -> Double? {
            guard let v = sets[k] else { return nil }
            guard let d = Double(v) else { throw UsageError("--set \(k)=\(v): not a number") }
            return d
        }
        func flag(_ k: String) throws -> Bool? {
            guard let v = sets[k] else { return nil }
            switch v.lowercased() { case "true", "1", "yes": return true; case "false", "0", "no": return false
            default: throw UsageError("--set \(k)=\(v): expected true or false") }
        }

        // Noise schedule and its parameters.
        guard var schedule = NoiseSchedule.named(r.schedule) else {
            throw UsageError("unknown --schedule '\(r.schedule)'; use loglinear, square, square_root, log, cosine, gaussian or bimodal_gaussian")
        }
        if case .gaussian(var g) = schedule {
            if let x = try num("mu") { g.mu = x }; if let x = try num("sigma") { g.sigma = x }; if let x = try num("p_min") { g.pMin = x }
            schedule = .gaussian(g)
        }
        if case .bimodal(var b) = schedule {
            if let x = try num("w1") { b.w1 = x }; if let x = try num("mu1") { b.mu1 = x }; if let x = try num("sigma1") { b.sigma1 = x }
            if let x = try num("sigma2") { b.sigma2 = x }; if let x = try num("m_start") { b.mStart = x }
            if let x = try num("m_end") { b.mEnd = x }; if let x = try num("tau_scale") { b.tauScale = x }
            if let x = try num("p_min") { b.pMin = x }
            schedule = .bimodal(b)
        }
        guard let reweighting = Reweighting.named(r.reweight) else {
            throw UsageError("unknown --reweight '\(r.reweight)'; use none, edm, iddpm, sigmoid, sigmoid:K, fm or simple")
        }

        // Data.
        let train = try SequenceData.load(path: r.data)
        let L = train.length
        let valid = try r.valid.map { try SequenceData.load(path: $0) }
        if let v = valid {
            guard v.header.tokenizerFingerprint == train.header.tokenizerFingerprint, v.header.vocabSize == train.header.vocabSize else {
                throw ToolError("\(r.valid!): tokenizer differs from the training data's; tokenize both with the same tokenizer")
            }
            guard v.length == L else { throw ToolError("\(r.valid!): rows have \(v.length) tokens, training rows \(L); pack both with the same --seq-len") }
        }
        guard train.header.special.mask >= 0 || r.algorithm == .ar else {
            throw ToolError("\(r.data): the stream declares no mask token; diffusion training needs one (tokenizer with [MASK])")
        }
        if r.algorithm == .bd3 && r.blockMix == nil {
            guard r.blockSize >= 1, L % r.blockSize == 0 else {
                throw UsageError("--block-size \(r.blockSize) does not divide the sequence length \(L)")
            }
        }
        var mix: BlockMix? = nil
        if let spec = r.blockMix {
            guard r.algorithm == .bd3 else { throw UsageError("--block-mix applies to --algo bd3 only") }
            mix = try BlockMix.parse(spec, length: L)
        }
        if r.algorithm == .sedd {
            guard reweighting == .none else { throw UsageError("--reweight applies to ar/mdlm/bd3; SEDD weights its loss by dσ(t)") }
            guard r.schedule == "loglinear" else {
                throw UsageError("--schedule applies to mdlm/bd3; for sedd choose σ(t) with --set sedd_noise=bd3lms|loglinear")
            }
        } else if sets["sedd_noise"] != nil {
            throw UsageError("--set sedd_noise applies to --algo sedd only")
        }
        guard let precision = Precision(rawValue: r.precision) else {
            throw UsageError("--precision must be fp32 or bf16, got '\(r.precision)'")
        }
        if r.algorithm == .ar && L < 2 { throw UsageError("AR training needs sequences of at least 2 tokens") }

        var o = TrainOptions()
        o.algorithm = r.algorithm; o.blockSize = r.algorithm == .bd3 ? r.blockSize : (r.algorithm == .ar ? 1 : L)
        if let m = mix { o.blockMix = m; o.blockSize = m.draftSize }
        o.steps = r.steps; o.batch = r.batch; o.accumulate = r.accumulate; o.lr = r.lr; o.warmup = r.warmup
        o.cosine = r.cosine; o.schedule = schedule; o.reweighting = reweighting; o.clipSearch = r.clipSearch
        if let c = r.clip { o.interval = try parseInterval(c) }
        o.precision = precision
        o.seed = r.seed; o.valEvery = r.valEvery; o.valBatches = r.valBatches; o.saveEvery = r.saveEvery
        if let x = try num("ema") { o.emaDecay = x }
        if let x = try num("grad_clip") { o.gradClip = x }
        if let x = try num("weight_decay") { o.weightDecay = x }
        if let x = try flag("resample") { o.resample = x }
        if let x = try flag("antithetic") { o.antithetic = x }
        if let x = try flag("ignore_bos") { o.ignoreBOS = x }
        if let v = sets["sedd_noise"] {
            guard let n = SEDDNoise(rawValue: v) else { throw UsageError("--set sedd_noise must be bd3lms or loglinear") }
            o.seddNoise = n
        }
        if let v = sets["tuned_rule"] {
            guard let t = TunedRule(rawValue: v) else { throw UsageError("--set tuned_rule must be exact or reference") }
            o.tunedRule = t
        }

        // Model config: resumed run > --init checkpoint > named config; then --set overrides.
        let optPath = r.runDir + "/last.optim.safetensors"
        let resuming = FileManager.default.fileExists(atPath: optPath)
        var config: ModelConfig
        if resuming {
            config = try readConfig(r.runDir + "/last.safetensors")
        } else if let ip = r.initPath {
            config = try readConfig(ip)
            config.length = L
        } else {
            guard let c = ModelConfig.named(r.configName, vocabSize: train.header.vocabSize) else {
                throw UsageError("unknown --config '\(r.configName)'; use \(ModelConfig.names.joined(separator: ", "))")
            }
            config = c
            config.length = L
            config.causal = r.algorithm == .ar
            config.timeConditioning = r.algorithm == .sedd   // SEDD: σ(t) drives adaLN
            if let x = try num("hidden_size") { config.hiddenSize = Int(x) }
            if let x = try num("n_blocks") { config.nBlocks = Int(x) }
            if let x = try num("n_heads") { config.nHeads = Int(x) }
            if let x = try num("cond_dim") { config.condDim = Int(x) }
            if let x = try num("dropout") { config.dropout = Float(x) }
        }
        guard config.vocabSize == train.header.vocabSize else {
            throw ToolError("the checkpoint's vocabulary (\(config.vocabSize)) differs from the data's (\(train.header.vocabSize)); tokenize with the checkpoint's tokenizer")
        }
        guard config.causal == (r.algorithm == .ar) else {
            throw UsageError("--algo \(r.algorithm.rawValue) does not match the checkpoint's model (\(config.causal ? "causal AR" : "diffusion"))")
        }
        guard config.timeConditioning == (r.algorithm == .sedd) else {
            throw UsageError("--algo \(r.algorithm.rawValue) does not match the checkpoint's model (\(config.timeConditioning ? "time-conditioned SEDD" : "not time-conditioned"))")
        }
        do { try config.validate() } catch { throw UsageError("\(error)") }

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
            try trainer.initialize(from: ip)
            return (trainer, "initialised from \(ip)")
        }
        return (trainer, "fresh \(config.nBlocks)-layer model, \(model.parameterCount) parameters" + (mix.map { ", block mix \($0)" } ?? "")
                + (trainer.world.map { ", \($0.size) data-parallel ranks" } ?? ""))
    }

    static func readConfig(_ path: String) throws -> ModelConfig {
        let f: SafetensorsFile
        do { f = try SafetensorsFile(path: path) } catch { throw ToolError("\(error)") }
        return try CheckpointInfo.read(f).config
    }
}
