// The training loop (spec §7): AdamW + warmup LR + global-norm clipping + gradient accumulation +
// EMA, validation on the EMA weights with the Var-NELBO clip search (bd3), and checkpoints that let
// a killed run resume bit-for-bit.
//
// Checkpoint layout in RUN_DIR (both written atomically, optimizer file first):
//   last.safetensors, best.safetensors — the EMA weights under the reference state_dict names
//       (what validation, `score` and sampling use; the reference's released checkpoints are EMA
//       weights too), the reference scalar buffers `sampling_eps_min/max` (learned clip interval),
//       and __metadata__ (keys in `CheckpointInfo`). The reference loads this file as is.
//   last.optim.safetensors — tensors `live` (the raw, non-EMA parameters), `adam_m`, `adam_v`
//       (flat, in parameter-buffer order) and __metadata__ with step, RNG words, data cursor,
//       EMA update count, clip interval (exact decimal), best validation NLL. Not needed for eval.
import Foundation

public struct TrainOptions: Sendable {
    public var algorithm: Algorithm = .bd3
    public var blockSize = 4
    /// Mixed-scale training (bd3): block size drawn per sequence; `blockSize` is then the mix's draft size.
    public var blockMix: BlockMix? = nil
    public var steps = 1000
    public var batch = 8
    public var accumulate = 1
    public var lr = 3e-4
    public var warmup = 2500
    public var cosine = false
    public var schedule: NoiseSchedule = .loglinear
    public var reweighting: Reweighting = .none
    public var clipSearch = false
    public var interval: ClipInterval = .base
    public var seed: UInt64 = 1
    public var valEvery = 0
    public var valBatches = 100
    public var saveEvery = 500
    public var emaDecay = 0.9999
    public var gradClip = 1.0
    public var weightDecay = 0.0
    public var resample = true
    public var antithetic = true
    public var tunedRule: TunedRule = .exact
    public var ignoreBOS = true
    /// σ(t) / move chance of `--algo sedd` (`--set sedd_noise=bd3lms|loglinear`).
    public var seddNoise: SEDDNoise = .bd3lms
    /// Matmul operand precision (the model's `precision`); weights, gradients and optimizer stay fp32.
    public var precision: Precision = .fp32
    public init() {}

    /// JSON summary stored in checkpoint metadata.
    public var json: String {
        let d: [String: String] = [
            "algo": algorithm.rawValue, "block_size": "\(blockSize)", "steps": "\(steps)", "batch": "\(batch)",
            "accumulate": "\(accumulate)", "lr": "\(lr)", "warmup": "\(warmup)", "lr_schedule": cosine ? "cosine" : "constant",
            "noise": schedule.name, "reweight": reweighting.name, "clip_search": "\(clipSearch)", "seed": "\(seed)",
            "val_every": "\(valEvery)", "val_batches": "\(valBatches)", "ema": "\(emaDecay)", "grad_clip": "\(gradClip)", "weight_decay": "\(weightDecay)",
            "block_mix": blockMix?.description ?? "none", "sedd_noise": seddNoise.rawValue,
            "resample": "\(resample)", "antithetic": "\(antithetic)", "tuned_rule": tunedRule.rawValue, "ignore_bos": "\(ignoreBOS)",
            "precision": precision.rawValue,
        ]
        let data = try! JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

public struct StepStats: Sendable {
    public var step: Int, loss: Double, lr: Double, gradNorm: Double, tokens: Int
}

/// Validation of one block size.
public struct BlockValidation: Sendable {
    public var blockSize: Int
    public var nll: Double
    public var tokens: Int
    public var interval: ClipInterval          // the interval the NLL is reported for
    public var variances: [(ClipInterval, Double)]
    public var chosen: ClipInterval?           // argmin Var-NELBO (clip search)
}

public struct ValidationStats: Sendable {
    /// The NELBO per token; with a block mix the mix-weighted Σ P(L')·NELBO(L') (the mixed objective, Eq. 7),
    /// which also picks best.safetensors.
    public var nll: Double
    public var tokens: Int
    public var interval: ClipInterval          // the draft size's reported interval
    public var variances: [(ClipInterval, Double)]
    public var chosen: ClipInterval?           // the draft size's argmin Var-NELBO (clip search)
    /// One entry per block size (one for a single-size run), in the mix's order.
    public var perBlock: [BlockValidation]
}

public final class Trainer {
    public let model: DiT
    public var options: TrainOptions
    public let train: SequenceData
    public let valid: SequenceData?
    /// The diffusion/AR batch runner. For `sedd` it only carries the objective (time sampling, masking
    /// options, schedule hook); the batches run through `sedd`.
    public let loss: BatchLoss
    /// The SEDD batch runner (`--algo sedd`), nil otherwise.
    public let sedd: SEDDBatchLoss?
    public let adam: AdamW
    public let ema: EMA
    public internal(set) var step = 0
    /// The clip interval U[β, ω] per block size (one entry without a mix). Each size has its own,
    /// found by its own Var-NELBO clip search: the optimal masking-rate range depends on L'
    /// (for L' = L there is one t per sequence), so one shared interval would fit neither.
    public var intervals: [Int: ClipInterval]
    /// The draft (or only) block size's interval: the reference's `sampling_eps_min/max`.
    public var interval: ClipInterval {
        get { intervals[blockSizes[0]] ?? .base }
        set { intervals[blockSizes[0]] = newValue }
    }
    /// The block sizes trained: the mix's sizes (draft first), or the single size (1 for AR, L for MDLM/SEDD).
    public let blockSizes: [Int]
    public var rng: Xoshiro256
    public var order: BatchOrder
    public var bestNLL = Double.infinity
    /// Per-block-size NELBO of the last validation (mixed-scale runs record it in the weights metadata).
    public var lastValidationByBlock: [Int: Double]? = nil
    /// The data-parallel job this trainer is a rank of (nil: one process). Only rank 0 writes files.
    public var world: World? = nil
    var x0: [Int32] = []

    public init(model: DiT, options: TrainOptions, train: SequenceData, valid: SequenceData?) {
        self.model = model; self.options = options; self.train = train; self.valid = valid
        let L = train.length
        precondition(options.blockMix == nil || options.algorithm == .bd3, "a block mix needs bd3")
        let bs = options.blockMix?.draftSize
            ?? (options.algorithm == .mdlm || options.algorithm == .sedd ? L : (options.algorithm == .ar ? 1 : options.blockSize))
        var obj = DiffusionObjective(blockSize: bs, length: L, maskID: train.header.special.mask)
        obj.schedule = options.schedule; obj.reweighting = options.reweighting
        obj.resample = options.resample; obj.antithetic = options.antithetic; obj.tunedRule = options.tunedRule
        obj.ignoreBOS = options.algorithm == .ar ? false : options.ignoreBOS
        if options.algorithm == .sedd {
            let s = SEDDBatchLoss(model: model, noise: options.seddNoise, length: L, maskID: train.header.special.mask,
                                  maxBatch: options.batch, needsGradients: true)
            s.objective = obj
            sedd = s
        } else {
            sedd = nil
        }
        loss = BatchLoss(model: model, algorithm: options.algorithm, objective: obj, maxBatch: options.batch,
                         needsGradients: options.algorithm != .sedd)
        adam = AdamW(count: model.parameterCount)
        adam.weightDecay = options.weightDecay
        ema = EMA(parameters: UnsafeBufferPointer(model.parameters), decay: options.emaDecay)
        blockSizes = options.blockMix?.sizes ?? [bs]
        intervals = [:]
        for b in blockSizes { intervals[b] = options.interval }
        rng = Xoshiro256(seed: options.seed)
        order = BatchOrder(rows: train.count, seed: options.seed)
    }

    public var lrSchedule: LRSchedule {
        options.cosine ? .cosine(lr: options.lr, totalSteps: options.steps) : .constantWarmup(lr: options.lr, warmup: options.warmup)
    }

    /// One optimizer step over `accumulate` micro-batches (× the ranks of a data-parallel job). Throws on a
    /// non-finite loss (nothing updated).
    ///
    /// Each micro-batch k takes the next rows of the shuffled order and its own generator seeded from the
    /// run's RNG, so the stream of micro-batches is the same however they are spread over ranks: rank r of N
    /// runs k ≡ r (mod N) and skips the others' rows and seeds.
    public func trainStep() throws -> StepStats {
        var sched = loss.objective.schedule
        sched.setTrainingProgress(step: step, maxSteps: options.steps)
        loss.objective.schedule = sched
        model.zeroGradients()
        var total = 0.0
        let B = options.batch
        let ranks = world?.size ?? 1, rank = world?.rank ?? 0
        let micro = options.accumulate * ranks
        let scale = 1 / Double(micro)
        for k in 0..<micro {
            let rows = order.next(B)
            var mrng = Xoshiro256(seed: rng.split())
            guard k % ranks == rank else { continue }
            train.gather(rows, into: &x0)
            let s: LossSummary
            if let mix = options.blockMix {
                let sizes = mix.draw(count: B, &mrng)
                s = x0.withUnsafeBufferPointer {
                    loss.runMixed(x0: $0, batch: B, sizes: sizes, order: mix.sizes, intervals: intervals, weighted: true,
                                  gradScale: scale, rng: &mrng)
                }
            } else if let sedd {
                let seed = mrng.split()
                s = x0.withUnsafeBufferPointer {
                    sedd.run(x0: $0, batch: B, interval: interval, training: true, backward: true,
                             gradScale: scale, dropoutSeed: seed, rng: &mrng)
                }
            } else {
                let seed = mrng.split()
                s = x0.withUnsafeBufferPointer {
                    loss.run(x0: $0, batch: B, interval: interval, training: true, weighted: true, backward: true,
                             gradScale: scale, dropoutSeed: seed, rng: &mrng)
                }
            }
            total += s.tokenNLL
        }
        let tokens = micro * B * train.length
        if let world {
            // The one gradient exchange of the step; the loss sum rides in a second, 8-byte reduction.
            world.sumInPlace(model.gradients)
            total = world.sum([total])[0]
        }
        let l = total / Double(micro)
        guard l.isFinite else { throw TrainingDiverged(step: step + 1, loss: l, gradNorm: nil) }
        let norm = GradientClipping.clip(model.gradients, maxNorm: options.gradClip)
        guard norm.isFinite else { throw TrainingDiverged(step: step + 1, loss: l, gradNorm: norm) }
        let lr = lrSchedule.lr(afterSteps: step)
        adam.update(parameters: model.parameters, gradients: UnsafeBufferPointer(model.gradients), lr: Float(lr))
        ema.update(UnsafeBufferPointer(model.parameters))
        step += 1
        return StepStats(step: step, loss: l, lr: lr, gradNorm: norm, tokens: tokens)
    }

    /// The interval whose NLL is reported: U[1,1] for bd3 with L' = 1 (exact NLL), else (1e-3, 1).
    public var reportedInterval: ClipInterval { reportedInterval(blockSize: loss.objective.blockSize) }

    func reportedInterval(blockSize: Int) -> ClipInterval {
        options.algorithm == .bd3 && blockSize == 1 ? .tuned : .base
    }

    /// Validation on the EMA weights: for each trained block size, the NELBO over up to `valBatches`
    /// batches and, with the clip search, the Var-NELBO of every grid interval of that size; the
    /// argmin becomes that size's training interval. Each size uses its own fixed-seed RNG (the first
    /// size the seed a single-size run uses), so validation neither perturbs nor depends on the
    /// training stream, nor on the other sizes of the mix.
    public func validate() -> ValidationStats? {
        guard let valid else { return nil }
        var sched = loss.objective.schedule   // the reference sets the progress hook at validation too
        sched.setTrainingProgress(step: step, maxSteps: options.steps)
        loss.objective.schedule = sched
        ema.swap(with: model.parameters)
        defer { ema.swap(with: model.parameters) }
        let primary = loss.objective.blockSize
        defer { if options.algorithm == .bd3 { loss.setBlockSize(primary) } }
        let search = options.clipSearch && options.algorithm == .bd3
        var perBlock: [BlockValidation] = []
        for (index, size) in blockSizes.enumerated() {
            if options.algorithm == .bd3 { loss.setBlockSize(size) }
            let report = reportedInterval(blockSize: size)
            let grid = search ? ClipSearch.grid(blockSize: size) : [report]
            var accs = grid.map { ($0, VarianceAccumulator()) }
            var rng = Xoshiro256(seed: options.seed ^ 0xA5A5_5A5A_0F0F_F0F0 ^ (index == 0 ? 0 : UInt64(size) &* 0x9E37_79B9_7F4A_7C15))
            var nll = 0.0, count = 0
            let B = options.batch
            let nBatches = min((valid.count + B - 1) / B, options.valBatches)
            var rows: [Int32] = []
            for b in 0..<nBatches {
                let lo = b * B, hi = min(valid.count, lo + B)
                valid.gather(Array(lo..<hi), into: &rows)
                for j in accs.indices {
                    let s = rows.withUnsafeBufferPointer {
                        sedd?.run(x0: $0, batch: hi - lo, interval: accs[j].0, training: false, backward: false, dropoutSeed: 0, rng: &rng)
                        ?? loss.run(x0: $0, batch: hi - lo, interval: accs[j].0, training: false, weighted: false, backward: false,
                                    dropoutSeed: 0, rng: &rng)
                    }
                    if accs[j].0 == report { nll += s.nllSum; count += s.tokenCount }
                    accs[j].1.add(blockMeans: s.blockMeans)
                }
            }
            var chosen: ClipInterval? = nil
            if search, let best = ClipSearch.best(accs) {
                chosen = best
                intervals[size] = best
            }
            perBlock.append(BlockValidation(blockSize: size, nll: count > 0 ? nll / Double(count) : .nan, tokens: count,
                                            interval: report, variances: accs.map { ($0.0, $0.1.varNELBO) }, chosen: chosen))
        }
        lastValidationByBlock = Dictionary(uniqueKeysWithValues: perBlock.map { ($0.blockSize, $0.nll) })
        let first = perBlock[0]
        var nll = first.nll
        if let mix = options.blockMix {
            nll = 0
            for (v, p) in zip(perBlock, mix.probabilities) where p > 0 { nll += p * v.nll }
        }
        return ValidationStats(nll: nll, tokens: first.tokens, interval: first.interval, variances: first.variances,
                               chosen: first.chosen, perBlock: perBlock)
    }
}

/// A non-finite training loss or gradient norm: the step is not applied. `Trainer.run` also records it in
/// RUN_DIR/diverged.json, so a sweep can report a diverged configuration (the seed's FM and Simple
/// reweightings blew up) instead of failing or hiding it.
public struct TrainingDiverged: Error, CustomStringConvertible, Equatable {
    public let step: Int
    public let loss: Double
    public let gradNorm: Double?
    public var description: String {
        let what = gradNorm.map { "gradient norm is \($0)" } ?? "training loss is \(loss)"
        return "\(what) at step \(step); lower --lr or check the data (run stopped; the last checkpoint, if any, is unchanged)"
    }
    /// The record written to RUN_DIR/diverged.json (non-finite numbers as strings: JSON has no NaN).
    public var record: [String: Any] {
        var r: [String: Any] = ["step": step, "loss": String(describing: loss), "reason": description]
        if let g = gradNorm { r["grad_norm"] = String(describing: g) }
        return r
    }
}
