// train: fit an AR, MDLM or BD3-LM model on a packed `sequences` stream (thin shell over Trainer).
import ArgumentParser
import BlockDiffusion
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train an AR, MDLM, BD3-LM or SEDD model on packed token sequences.",
        discussion: """
        Writes RUN_DIR/last.safetensors and RUN_DIR/best.safetensors (EMA weights, reference tensor names) and RUN_DIR/last.optim.safetensors (optimizer moments, RNG, step). Rerunning the same command on the same RUN_DIR resumes exactly where the run stopped; Ctrl-C writes a checkpoint first (exit 130).

        Example:
          train --data owt.train.tok --valid owt.valid.tok --algo bd3 \\
                --block-size 4 --config cpu --steps 2000 --batch 8 \\
                --warmup 100 --val-every 500 --clip-search -o runs/bd3-4
          train ... --block-mix bimodal:4,256,0.1 --init runs/mdlm/best.safetensors -o runs/mix
          mpirun -np 4 --hostfile hosts train ... -o /shared/runs/bd3   # data-parallel (Open MPI), docs/training.md
        """)

    @Option(help: "Training sequences (pack-blocks output).") var data: String
    @Option(help: "Validation sequences (same tokenizer and length).") var valid: String?
    @Option(help: "ar, mdlm, bd3 or sedd (time-conditioned score entropy).") var algo: String = "bd3"
    @Option(help: "Block size L' for bd3 (must divide the sequence length; default 4).") var blockSize: Int?
    @Option(help: ArgumentHelp("Mixed-scale training (bd3): block size drawn per sequence. bimodal:DRAFT[,GLOBAL[,LAMBDA]] (P(DRAFT)=1-LAMBDA, P(GLOBAL)=LAMBDA; GLOBAL defaults to the sequence length, LAMBDA to 0.1) or uniform:S1,S2,... Every size must divide the sequence length.", valueName: "mix"))
    var blockMix: String?
    @Option(help: "Model size: tiny, small or cpu.") var config: String = "cpu"
    @Option(name: .customLong("set"), help: "Override key=value (hidden_size, n_blocks, n_heads, cond_dim, dropout, ema, grad_clip, weight_decay, resample, antithetic, tuned_rule, ignore_bos, sedd_noise, mu, sigma, p_min, w1, mu1, sigma1, sigma2, m_start, m_end, tau_scale).")
    var sets: [String] = []
    @Option(help: "Optimizer steps.") var steps: Int = 1000
    @Option(help: "Sequences per micro-batch.") var batch: Int = 8
    @Option(help: "Micro-batches per optimizer step.") var accumulate: Int = 1
    @Option(help: "Peak learning rate.") var lr: Double = 3e-4
    @Option(help: "Linear warmup steps (constant schedule).") var warmup: Int = 2500
    @Option(help: "constant (warmup then constant) or cosine (10% warmup from 1e-6, cosine to 1e-6).") var lrSchedule: String = "constant"
    @Option(help: "Noise schedule: loglinear, square, square_root, log, cosine, gaussian, bimodal_gaussian.") var schedule: String = "loglinear"
    @Option(help: "Loss reweighting: none, edm, iddpm, sigmoid[:k], fm, simple (training loss only).") var reweight: String = "none"
    @Flag(help: "Search the clipped interval U[a,b] minimising Var-NELBO at each validation (bd3).") var clipSearch = false
    @Option(help: "Fixed (initial) clip interval 'a,b' for t ~ U[a,b].") var clip: String?
    @Option(help: "Start from this checkpoint's weights (e.g. trained at another block size).") var `init`: String?
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Validate (on EMA weights) every N steps; 0 = only at the end.") var valEvery: Int = 0
    @Option(help: "At most this many validation batches.") var valBatches: Int = 100
    @Option(help: "Write last.* every N steps.") var saveEvery: Int = 500
    @Option(help: "Print progress every N steps.") var logEvery: Int = 10
    @Option(help: "Append JSON-lines metrics to this file.") var metrics: String?
    @Option(name: .shortAndLong, help: "Run directory.") var output: String
    @Option(help: "Matmul operand precision: fp32 or bf16 (fp32 weights, gradients, optimizer either way).") var precision: String = "fp32"

    func run() throws {
        // Under mpirun: any rank's failure stops the whole job with its message (see DataParallel.swift).
        let world = try World.join()
        do { try train(world) } catch {
            if let world {
                if let e = error as? ExitCode, e.rawValue > 128 { world.finish(); throw e }   // stopped by a signal, checkpoint written
                world.stop("\(error)", code: error is ValidationError ? 64 : 1)
            }
            throw error
        }
        world?.finish()
    }

    func train(_ world: World?) throws {
        guard let a = Algorithm(rawValue: algo) else { throw ValidationError("--algo must be ar, mdlm, bd3 or sedd") }
        guard lrSchedule == "constant" || lrSchedule == "cosine" else { throw ValidationError("--lr-schedule must be constant or cosine") }
        guard logEvery >= 1 else { throw ValidationError("--log-every must be ≥ 1") }
        var r = TrainRequest()
        if blockMix != nil && blockSize != nil { throw ValidationError("--block-size and --block-mix exclude each other (the mix names its draft size)") }
        r.data = data; r.valid = valid; r.algorithm = a; r.blockSize = blockSize ?? 4; r.blockMix = blockMix; r.configName = config; r.sets = sets
        r.steps = steps; r.batch = batch; r.accumulate = accumulate; r.lr = lr; r.warmup = warmup
        r.cosine = lrSchedule == "cosine"; r.schedule = schedule; r.reweight = reweight; r.clipSearch = clipSearch
        r.clip = clip; r.initPath = `init`; r.seed = seed; r.valEvery = valEvery; r.valBatches = valBatches
        r.saveEvery = saveEvery; r.runDir = output; r.precision = precision
        let trainer: Trainer, how: String
        do { (trainer, how) = try TrainSetup.make(r) } catch let e as UsageError { throw ValidationError(e.description) }
        let leader = world?.isLeader ?? true   // rank 0 logs and writes; the others only compute
        let log: (String) -> Void = { if leader { FileHandle.standardError.write(Data(("train: " + $0 + "\n").utf8)) } }
        log(how)
        let m = leader ? try metrics.map { try MetricsLog(path: $0) } : nil
        StopSignal.install(alsoOn: world == nil ? [] : [SIGUSR1])
        let out = try trainer.run(runDir: output, metrics: m, logEvery: logEvery, log: log)
        if let s = out.stoppedBySignal { throw ExitCode(128 + s) }
        log(String(format: "done: step %d, last loss %.4f; checkpoints in %@", out.step, out.lastLoss, output))
    }
}

Runtime.prepareTool()
Train.main()
