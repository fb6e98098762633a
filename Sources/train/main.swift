// train: fit an AR, MDLM or BD3-LM model on a packed `sequences` stream (thin shell over Trainer).
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

/// --lr-schedule.
enum LRSchedule: String, CaseIterable, ExpressibleByArgument { case constant, cosine }

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
          train --data owt.train.tok --valid owt.valid.tok --algo bd3 \\
                --block-mix bimodal:4,256,0.1 \\
                --init runs/mdlm/best.safetensors -o runs/mix
          mpirun -np 2 train --data owt.train.tok --algo bd3 --steps 2000 -o runs/bd3-dp

        Under mpirun every rank trains on its own micro-batches and the gradients are averaged (Open MPI, \
        loaded at run time; docs/training.md).
        """)

    @Option(help: "Training sequences (pack-blocks output).") var data: String?
    @Option(name: .customLong("export-hf"), help: ArgumentHelp("Instead of training: write RUN_DIR (-o) as a Hugging Face model directory (config.json + model.safetensors) that the reference's BD3LM.from_pretrained loads.", valueName: "dir")) var exportHF: String?
    @Option(help: "Validation sequences (same tokenizer and length).") var valid: String?
    @Option(help: "ar, mdlm, bd3 or sedd (time-conditioned score entropy).") var algo: Algorithm = .bd3
    @Option(parsing: .unconditional, help: "Block size L' for bd3 (must divide the sequence length; default 4).") var blockSize: Int?
    @Option(help: ArgumentHelp("Mixed-scale training (bd3): block size drawn per sequence. bimodal:DRAFT[,GLOBAL[,LAMBDA]] (P(DRAFT)=1-LAMBDA, P(GLOBAL)=LAMBDA; GLOBAL defaults to the sequence length, LAMBDA to 0.1) or uniform:S1,S2,... Every size must divide the sequence length.", valueName: "mix"))
    var blockMix: String?
    @Option(help: "Model size: tiny, small or cpu.") var config: String = "cpu"
    @Option(name: .customLong("set"), help: "Override key=value (hidden_size, n_blocks, n_heads, cond_dim, dropout, ema, grad_clip, weight_decay, resample, antithetic, tuned_rule, ignore_bos, sedd_noise, mu, sigma, p_min, w1, mu1, sigma1, sigma2, m_start, m_end, tau_scale).")
    var sets: [String] = []
    @Option(parsing: .unconditional, help: "Optimizer steps.") var steps: Int = 1000
    @Option(parsing: .unconditional, help: "Sequences per micro-batch.") var batch: Int = 8
    @Option(parsing: .unconditional, help: "Micro-batches per optimizer step.") var accumulate: Int = 1
    @Option(parsing: .unconditional, help: "Peak learning rate.") var lr: Double = 3e-4
    @Option(parsing: .unconditional, help: "Linear warmup steps (constant schedule; default: 2500, at most a tenth of --steps).") var warmup: Int?
    @Option(help: "constant (warmup then constant) or cosine (10% warmup from 1e-6, cosine to 1e-6).") var lrSchedule: LRSchedule = .constant
    @Option(help: "Noise schedule: loglinear, square, square_root, log, cosine, gaussian, bimodal_gaussian.") var schedule: String = "loglinear"
    @Option(help: "Loss reweighting: none, edm, iddpm, sigmoid[:k], fm, simple (training loss only).") var reweight: String = "none"
    @Flag(help: "Search the clipped interval U[a,b] minimising Var-NELBO at each validation (bd3).") var clipSearch = false
    @Option(parsing: .unconditional, help: "Fixed (initial) clip interval 'a,b' (0 ≤ a ≤ b ≤ 1) for t ~ U[a,b].") var clip: String?
    @Option(help: "Start from this checkpoint's weights (e.g. trained at another block size).") var `init`: String?
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "Validate (on EMA weights) every N steps; 0 = only at the end.") var valEvery: Int = 0
    @Option(parsing: .unconditional, help: "At most this many validation batches.") var valBatches: Int = 100
    @Option(parsing: .unconditional, help: "Write last.* every N steps; 0 = only at the end.") var saveEvery: Int = 500
    @Option(parsing: .unconditional, help: "Print progress every N steps.") var logEvery: Int = 10
    @Option(help: "Append JSON-lines metrics to this file.") var metrics: String?
    @Option(name: .shortAndLong, help: "Run directory.") var output: String
    @Option(help: "Matmul operand precision: fp32 or bf16 (fp32 weights, gradients, optimizer either way).") var precision: String = "fp32"

    /// The library's request (validated by TrainRequest.validate()).
    func request() -> TrainRequest {
        var r = TrainRequest()
        r.data = data ?? ""; r.valid = valid; r.algorithm = algo; r.blockSize = blockSize ?? 4; r.blockMix = blockMix; r.configName = config; r.sets = sets
        r.steps = steps; r.batch = batch; r.accumulate = accumulate; r.lr = lr; r.warmup = warmup ?? TrainRequest.defaultWarmup(steps: steps)
        r.cosine = lrSchedule == .cosine; r.schedule = schedule; r.reweight = reweight; r.clipSearch = clipSearch
        r.clip = clip; r.initPath = `init`; r.seed = seed; r.valEvery = valEvery; r.valBatches = valBatches
        r.saveEvery = saveEvery; r.runDir = output; r.precision = precision
        return r
    }

    func validate() throws {
        if exportHF != nil { return }   // only -o RUN_DIR is read
        guard data != nil else { throw ValidationError("missing --data (training sequences)") }
        try usage { try checkRange(logEvery, 1...Limits.steps, "--log-every") }
        if blockMix != nil && blockSize != nil { throw ValidationError("--block-size and --block-mix exclude each other (the mix names its draft size)") }
        try usage { try request().validate() }
    }

    func run() throws {
        if let exportHF {
            try HFExport.export(source: output, to: exportHF)
            FileHandle.standardError.write(Data("train: exported \(output) to \(exportHF) (config.json + model.safetensors)\n".utf8))
            return
        }
        // Under mpirun: any rank's failure stops the whole job with its message (see DataParallel.swift).
        let world = try World.join()
        do { try train(world) } catch {
            if let world {
                if let e = error as? ExitCode, e.rawValue > 128 { world.finish(); throw e }   // stopped by a signal, checkpoint written
                world.stop("\(error)", code: error is ValidationError || error is UsageError ? 64 : 1)
            }
            throw error
        }
        world?.finish()
    }

    func train(_ world: World?) throws {
        let (trainer, how) = try TrainSetup.make(request())
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

runTool(Train.self)
