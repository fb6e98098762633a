// The outer loop of `train`: steps, progress on stderr, JSONL metrics, periodic validation and
// checkpoints, and a clean stop on SIGINT/SIGTERM (checkpoint, then exit so a rerun resumes).
import Foundation

/// SIGINT/SIGTERM set a flag that the loop polls between optimizer steps (it then checkpoints and
/// exits with 128+signal). A second signal before that kills the process the default way. This
/// replaces, for these two signals, the temp-file cleanup handler of `Runtime.prepareTool()`;
/// checkpoints are written through their own temp files, which a kill at worst leaves behind.
public enum StopSignal {
    nonisolated(unsafe) static var received: sig_atomic_t = 0

    /// `alsoOn`: more signals with the same meaning — a data-parallel job adds SIGUSR1, which Open MPI's mpirun
    /// forwards to every rank (on SIGINT/SIGTERM mpirun itself tears the job down within seconds).
    public static func install(alsoOn extra: [Int32] = []) {
        for sig in [SIGINT, SIGTERM] + extra {
            let previous = signal(sig) { s in
                if StopSignal.received != 0 { signal(s, SIG_DFL); raise(s); return }
                StopSignal.received = s
            }
            // nohup / ignored signals stay ignored.
            if unsafeBitCast(previous, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) { signal(sig, SIG_IGN) }
        }
    }
    public static var pending: Int32 { Int32(received) }
    /// For tests.
    public static func raiseForTesting(_ s: Int32) { received = sig_atomic_t(s) }
    public static func reset() { received = 0 }
}

public struct RunOutcome: Sendable {
    public var step: Int
    public var lastLoss: Double
    public var stoppedBySignal: Int32?
}

extension Trainer {
    /// Runs until `options.steps`, or until a stop signal (checkpoint written, outcome.stoppedBySignal set).
    /// A non-finite loss throws `TrainingDiverged` after writing RUN_DIR/diverged.json (the last checkpoint
    /// stays as it was).
    public func run(runDir: String, metrics: MetricsLog?, logEvery: Int = 10, log: (String) -> Void) throws -> RunOutcome {
        let start = Date()
        let firstStep = step
        let leader = world?.isLeader ?? true
        if leader { unlink(runDir + "/diverged.json") }   // a record from an earlier attempt no longer describes this run
        var last = Double.nan
        var lastVal: Double? = nil
        var paused = 0.0   // seconds spent validating / checkpointing, left out of tokens/s
        while step < options.steps {
            // Every rank stops at the same step: a signal seen by any rank (mpirun forwards them) stops all.
            let pending = world.map { Int32($0.max(Double(StopSignal.pending))) } ?? StopSignal.pending
            if pending != 0 {
                let s = pending
                try saveCheckpoint(runDir: runDir, best: false, valNLL: lastVal)
                log("stopped by signal \(s) at step \(step); checkpoint written to \(runDir), rerun the same command to resume")
                return RunOutcome(step: step, lastLoss: last, stoppedBySignal: s)
            }
            let st: StepStats
            do { st = try trainStep() } catch let d as TrainingDiverged {
                try metrics?.write(["step": d.step, "diverged": d.record])
                if leader { try? Trainer.writeJSON(d.record, to: runDir + "/diverged.json") }
                throw d
            }
            last = st.loss
            let elapsed = Date().timeIntervalSince(start) - paused
            let done = step - firstStep
            let tps = elapsed > 0 ? Double(done * st.tokens) / elapsed : 0
            if step % logEvery == 0 || step == options.steps || step == firstStep + 1 {
                let eta = done > 0 ? elapsed / Double(done) * Double(options.steps - step) : 0
                log(String(format: "step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %@",
                           step, options.steps, st.loss, st.lr, st.gradNorm, tps, Trainer.duration(eta)))
                try metrics?.write(["step": step, "loss": st.loss, "lr": st.lr, "grad_norm": st.gradNorm, "tokens_per_s": tps])
            }
            var saved = false
            let pauseStart = Date()
            defer { paused += Date().timeIntervalSince(pauseStart) }
            if options.valEvery > 0 && step % options.valEvery == 0 && step < options.steps, let v = validate() {
                lastVal = v.nll
                try report(v, metrics: metrics, log: log)
                let isBest = v.nll < bestNLL
                if isBest { bestNLL = v.nll }
                try saveCheckpoint(runDir: runDir, best: isBest, valNLL: v.nll)
                saved = true
            }
            if !saved && options.saveEvery > 0 && step % options.saveEvery == 0 && step < options.steps {
                try saveCheckpoint(runDir: runDir, best: false, valNLL: lastVal)
            }
        }
        // Final validation + checkpoint.
        var isBest = false
        if let v = validate() {
            lastVal = v.nll
            try report(v, metrics: metrics, log: log)
            isBest = v.nll < bestNLL
            if isBest { bestNLL = v.nll }
        } else {
            isBest = true   // without validation data, the last weights are the best we have
        }
        try saveCheckpoint(runDir: runDir, best: isBest, valNLL: lastVal)
        return RunOutcome(step: step, lastLoss: last, stoppedBySignal: nil)
    }

    /// One JSON object written atomically (temp file + rename).
    static func writeJSON(_ object: [String: Any], to path: String) throws {
        let d = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        let out = try OutputFile(path: path)
        try out.write([UInt8](d) + [UInt8(ascii: "\n")])
        try out.commit()
    }

    func report(_ v: ValidationStats, metrics: MetricsLog?, log: (String) -> Void) throws {
        var line = options.blockMix != nil
            ? String(format: "valid step %d  nll %.4f  ppl %.2f  (mix-weighted over %@, %d tokens per size)", step, v.nll, exp(v.nll),
                     options.blockMix!.description, v.tokens)
            : String(format: "valid step %d  nll %.4f  ppl %.2f  (%@, %d tokens)", step, v.nll, exp(v.nll), v.interval.description, v.tokens)
        if let c = v.chosen, options.blockMix == nil { line += "  clip → \(c)" }
        log(line)
        var obj: [String: Any] = ["step": step, "val_nll": v.nll, "val_ppl": exp(v.nll), "val_tokens": v.tokens]
        if v.variances.count > 1 || v.chosen != nil {
            var vars: [String: Double] = [:]
            for (c, x) in v.variances where x.isFinite { vars[String(format: "%.3f-%.3f", c.min, c.max)] = x }
            obj["var_nelbo"] = vars
        }
        if let c = v.chosen { obj["clip"] = [c.min, c.max] }
        if options.blockMix != nil {
            // Mixed-scale: the NELBO (and searched interval) of every block size; val_nll is their mix-weighted mean.
            var byBlock: [String: Double] = [:], clips: [String: [Double]] = [:]
            for p in v.perBlock {
                log(String(format: "valid step %d    L'=%-5d nll %.4f  ppl %.2f  (%@)", step, p.blockSize, p.nll, exp(p.nll), p.interval.description)
                    + (p.chosen.map { "  clip → \($0)" } ?? ""))
                byBlock["\(p.blockSize)"] = p.nll
                if let c = p.chosen { clips["\(p.blockSize)"] = [c.min, c.max] }
            }
            obj["val_nll_by_block"] = byBlock
            if !clips.isEmpty { obj["clip_by_block"] = clips }
        }
        try metrics?.write(obj)
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
        if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
        return "\(t)s"
    }
}
