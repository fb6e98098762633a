// Data-parallel training under Open MPI: `mpirun -np 2 train --batch B` against one process with
// `--accumulate 2`, resume of a job, and a failing job's message. Runs the built `train` binary under mpirun
// (installed by pipelines/deps.sh); root, as in CI, needs Open MPI's two opt-in variables.
import XCTest
import Foundation
@testable import BlockDiffusion

final class DataParallelTests: TinyRunTestCase {
    var mpirun = ""

    override func setUpWithError() throws {
        try super.setUpWithError()
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { String($0) + "/mpirun" }
        guard let m = path.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("mpirun not on PATH (pipelines/deps.sh installs openmpi-bin libopenmpi-dev)")
        }
        mpirun = m
    }

    func trainArgs(_ out: String, steps: Int, extra: [String] = []) -> [String] {
        ["--data", trainPath, "--algo", "bd3", "--block-size", "4", "--steps", "\(steps)", "--batch", "2", "--lr", "3e-3",
         "--warmup", "0", "--save-every", "0", "--set", "hidden_size=32", "--set", "n_blocks=2", "--set", "n_heads=2",
         "--set", "cond_dim=16", "--set", "dropout=0.1", "-o", out] + extra
    }

    /// Runs `train` under `mpirun -np ranks` (1 thread per rank: the machine may have fewer cores than ranks).
    func mpi(_ ranks: Int, _ args: [String]) throws -> (code: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun)
        p.arguments = ["-np", "\(ranks)", "--oversubscribe", "--bind-to", "none", try cliBinary("train")] + args
        var env = ProcessInfo.processInfo.environment
        env["BD3_NO_REEXEC"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"   // containers often forbid cross-process memory access
        p.environment = env
        let o = Pipe(), e = Pipe()
        p.standardOutput = o; p.standardError = e
        try p.run()
        let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }

    func live(_ runDir: String) throws -> (live: [Float], adamV: [Float]) {
        let f = try SafetensorsFile(path: runDir + "/last.optim.safetensors")
        return (try f.floats("live"), try f.floats("adam_v"))
    }

    /// Largest |a − b| relative to the largest |b|.
    func relDiff(_ a: [Float], _ b: [Float]) -> Double {
        var d = 0.0, m = 0.0
        for i in b.indices { d = Swift.max(d, abs(Double(a[i]) - Double(b[i]))); m = Swift.max(m, abs(Double(b[i]))) }
        return d / m
    }

    /// Two ranks × --batch 2 = one process × --batch 2 --accumulate 2: the same micro-batches, rows and seeds;
    /// only the order of the fp32 gradient sums differs (embedding rows accumulate in place in one process,
    /// per rank then summed under MPI), hence ≤ 1e-6 relative rather than bit-identical.
    func testTwoRanksEqualOneProcessAccumulatingTwo() throws {
        let a = try mpi(2, trainArgs(dir + "/mpi", steps: 4))
        XCTAssertEqual(a.code, 0, a.err)
        XCTAssertTrue(a.err.contains("2 data-parallel ranks"), a.err)
        let b = try runCLI(try cliBinary("train"), trainArgs(dir + "/one", steps: 4, extra: ["--accumulate", "2"]))
        XCTAssertEqual(b.code, 0, b.err)
        let x = try live(dir + "/mpi"), y = try live(dir + "/one")
        XCTAssertEqual(x.live.count, y.live.count)
        print("mpirun -np 2 vs --accumulate 2: weights differ by \(relDiff(x.live, y.live)) relative, \(zip(x.live, y.live).filter { $0 != $1 }.count) of \(y.live.count) differ")
        XCTAssertLessThanOrEqual(relDiff(x.live, y.live), 1e-6)
        XCTAssertLessThanOrEqual(relDiff(x.adamV, y.adamV), 1e-5)
        XCTAssertNotEqual(x.live, try live(dir + "/mpi").live.map { $0 + 1 })   // sanity: comparison is on real data
        // Only rank 0 logs.
        XCTAssertEqual(a.err.components(separatedBy: "train: done").count - 1, 1, a.err)
    }

    /// A job stopped after its step-2 checkpoint and rerun to step 4 ends with exactly the weights of the job
    /// that ran 4 steps straight (every rank resumes from rank 0's files).
    func testJobResumesExactly() throws {
        let straight = try mpi(2, trainArgs(dir + "/straight", steps: 4))
        XCTAssertEqual(straight.code, 0, straight.err)
        let first = try mpi(2, trainArgs(dir + "/resumed", steps: 2))
        XCTAssertEqual(first.code, 0, first.err)
        let second = try mpi(2, trainArgs(dir + "/resumed", steps: 4))
        XCTAssertEqual(second.code, 0, second.err)
        XCTAssertTrue(second.err.contains("resuming"), second.err)
        let x = try live(dir + "/straight"), y = try live(dir + "/resumed")
        XCTAssertEqual(x.live, y.live)
        XCTAssertEqual(x.adamV, y.adamV)
    }

    /// A rank that fails stops the job with its rank and reason, and a non-zero exit.
    func testFailingRankStopsTheJob() throws {
        let r = try mpi(2, trainArgs(dir + "/bad", steps: 2).map { $0 == trainPath ? dir + "/missing.tok" : $0 })
        XCTAssertNotEqual(r.code, 0)
        XCTAssertTrue(r.err.contains("rank ") && r.err.contains("stopping the job"), r.err)
        XCTAssertTrue(r.err.contains("missing.tok"), r.err)
    }
}

extension DataParallelTests {
    /// `kill -USR1 <mpirun>` mid-run: mpirun forwards it, the ranks agree on the step, rank 0 checkpoints, the job
    /// exits 138; rerunning continues exactly (same weights as a job that ran straight to the same step).
    func testSignalStopsJobWithCheckpointAndResumeIsExact() throws {
        let t = self, m = mpirun
        let p = Process()
        p.executableURL = URL(fileURLWithPath: m)
        p.arguments = ["-np", "2", "--oversubscribe", "--bind-to", "none", try cliBinary("train")]
            + t.trainArgs(dir + "/stopped", steps: 100_000, extra: ["--log-every", "1"])
        var env = ProcessInfo.processInfo.environment
        env["BD3_NO_REEXEC"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
        p.environment = env
        let log = dir + "/stopped.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let h = FileHandle(forWritingAtPath: log)!
        p.standardError = h; p.standardOutput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("step 3/") { usleep(100_000) }
        kill(p.processIdentifier, SIGUSR1)
        p.waitUntilExit()
        try h.close()
        let err = try String(contentsOfFile: log, encoding: .utf8)
        XCTAssertEqual(p.terminationStatus, 128 + SIGUSR1, err)
        guard let r = err.range(of: #"stopped by signal \d+ at step (\d+)"#, options: .regularExpression) else {
            return XCTFail("no stop message: \(err)")
        }
        let k = Int(err[r].split(separator: " ").last!)!
        XCTAssertGreaterThanOrEqual(k, 3)
        let resumed = try t.mpi(2, t.trainArgs(dir + "/stopped", steps: k + 2))
        XCTAssertEqual(resumed.code, 0, resumed.err)
        XCTAssertTrue(resumed.err.contains("resuming \(dir)/stopped at step \(k)"), resumed.err)
        let straight = try t.mpi(2, t.trainArgs(dir + "/straight", steps: k + 2))
        XCTAssertEqual(straight.code, 0, straight.err)
        XCTAssertEqual(try t.live(dir + "/stopped").live, try t.live(dir + "/straight").live)
    }
}
