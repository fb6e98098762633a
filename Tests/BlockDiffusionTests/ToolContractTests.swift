// The command-line contract of every tool (tokenize, pack-blocks, train, draft, remask, refine, score):
// --help shows a runnable example; a usage error exits 64 with the real reason (negative numbers included,
// huge sizes refused before any allocation); a runtime error exits 1; stdout that cannot be written is
// exit 1; a failed run leaves no output and no temp file; BD3_PARSE_ONLY=1 stops after validation.
// Plus the regression tests of the defects found by the bad-input campaign (issue list in the names).
import XCTest
import Foundation
@testable import BlockDiffusion

final class ToolContractTests: TinyRunTestCase {
    static let tools = ["tokenize", "pack-blocks", "train", "score", "draft", "remask", "refine"]

    /// Runs a tool with stdout to `stdoutPath` (a file or /dev/full), stdin from `stdinPath`, extra environment.
    func run(_ tool: String, _ args: [String], stdout stdoutPath: String? = nil, stdin stdinPath: String? = nil,
             env: [String: String] = [:]) throws -> (code: Int32, out: String, err: String) {
        let p = cliProcess(try cliBinary(tool), args)
        var e = p.environment ?? [:]
        for (k, v) in env { e[k] = v }
        p.environment = e
        let o = Pipe(), er = Pipe()
        if let stdoutPath {
            if !FileManager.default.fileExists(atPath: stdoutPath) { FileManager.default.createFile(atPath: stdoutPath, contents: nil) }
            p.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        } else {
            p.standardOutput = o
        }
        p.standardInput = stdinPath.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
        p.standardError = er
        try p.run()
        let od = stdoutPath == nil ? o.fileHandleForReading.readDataToEndOfFile() : Data()
        let ed = er.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }

    /// A tiny checkpoint trained for one step by the train tool (RUN/best.safetensors).
    func trainCheckpoint(_ algo: String = "bd3", extra: [String] = []) throws -> String {
        let runDir = dir + "/run-" + algo
        let r = try run("train", ["--data", trainPath, "--valid", validPath, "--algo", algo, "--set", "hidden_size=32", "--set", "n_blocks=1",
                                  "--set", "n_heads=2", "--set", "cond_dim=16", "--batch", "4", "--warmup", "0", "--steps", "1",
                                  "--val-batches", "1", "-o", runDir] + extra)
        XCTAssertEqual(r.code, 0, r.err)
        return runDir + "/best.safetensors"
    }

    func leftovers() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.contains(".tmp-") }
    }

    // MARK: help

    func testEveryHelpShowsAnExampleAndGroupsWithoutSubcommandAreUsageErrors() throws {
        let pages: [(String, [String])] = [("tokenize", []), ("tokenize", ["train"]), ("tokenize", ["import"]), ("tokenize", ["encode"]),
                                           ("tokenize", ["decode"]), ("tokenize", ["stats"]), ("pack-blocks", []), ("train", []),
                                           ("score", []), ("score", ["ppl"]), ("score", ["gen"]), ("draft", []), ("remask", []), ("refine", [])]
        for (tool, sub) in pages {
            let r = try run(tool, sub + ["--help"])
            XCTAssertEqual(r.code, 0, "\(tool) \(sub) --help: \(r.err)")
            XCTAssertTrue(r.out.contains("Example"), "\(tool) \(sub) --help has no example")
            let command = ([tool] + sub).joined(separator: " ")
            XCTAssertTrue(r.out.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix(command + " ") },
                          "\(command) --help shows no example of itself:\n\(r.out)")
        }
        for tool in ["tokenize", "score"] {
            let r = try run(tool, [])
            XCTAssertEqual(r.code, 64, "\(tool) without a subcommand")
            XCTAssertEqual(r.out, "", "usage goes to stderr")
            XCTAssertTrue(r.err.contains("missing subcommand"), r.err)
        }
        // Help that cannot be written is not a success either.
        XCTAssertEqual(try run("draft", ["--help"], stdout: "/dev/full").code, 1)
    }

    // MARK: usage errors

    func testUsageErrorsExit64WithTheRealReason() throws {
        let cases: [(String, [String], String)] = [
            // Negative numbers reach validation (ArgumentParser used to read "-1" as a flag: "Missing value").
            ("draft", ["-m", "x", "--length", "8", "--steps", "-1"], "--steps must be in 1...1073741824 (got -1)"),
            ("draft", ["-m", "x", "--length", "-8"], "--length must be in"),
            ("refine", ["-m", "x", "--nucleus", "-0.5"], "--nucleus must be in (0, 1]"),
            ("remask", ["--ratio", "-0.1"], "--ratio must be in [0, 1] (got -0.1)"),
            ("pack-blocks", ["-L", "-4", "-o", "x.tok"], "-L must be in"),
            ("pack-blocks", ["-L", "8", "--block-size", "-2", "-o", "x.tok"], "--block-size must be in"),
            ("train", ["--data", "x", "-o", "y", "--batch", "-2"], "--batch must be in"),
            ("train", ["--data", "x", "-o", "y", "--lr", "-1e-3"], "--lr must be a finite number > 0"),
            ("score", ["ppl", "-m", "x", "-i", "y", "--samples", "-1"], "--samples must be in"),
            ("score", ["gen", "--scorer", "x", "--stride", "-3"], "--stride must be in"),
            ("tokenize", ["encode", "-t", "x", "--threads", "-1"], "--threads must be in"),
            // Upper bounds: usage errors, never an allocation abort or a segfault.
            ("draft", ["-m", "x", "--length", "4611686018427387904"], "--length must be in 1...1048576"),
            ("draft", ["-m", "x", "--length", "8", "-n", "9223372036854775807"], "-n must be in"),
            ("draft", ["-m", "x", "--length", "8", "--batch", "100000000"], "--batch must be in"),
            ("refine", ["-m", "x", "--block-size", "4611686018427387904"], "--block-size must be in"),
            ("score", ["ppl", "-m", "x", "-i", "y", "--batch", "1000000000"], "--batch must be in"),
            ("train", ["--data", "x", "-o", "y", "--steps", "9223372036854775807"], "--steps must be in"),
            ("train", ["--data", "x", "-o", "y", "--set", "hidden_size=1e30"], "--set hidden_size must be a whole number"),
            // --clip states the rule it enforces (it used to refuse 2,3 with a rule 2,3 satisfies).
            ("train", ["--data", "x", "-o", "y", "--clip", "2,3"], "0 ≤ min ≤ max ≤ 1"),
            ("score", ["ppl", "-m", "x", "-i", "y", "--clip", "0.9,0.2"], "0 ≤ min ≤ max ≤ 1"),
            ("score", ["ppl", "-m", "x", "-i", "y", "--clip", "-0.1,0.5"], "0 ≤ min ≤ max ≤ 1"),
            ("draft", ["-m", "x", "--length", "8", "--shard", "2/2"], "--shard must be i/n"),
            ("train", ["--data", "x", "-o", "y", "--algo", "gpt"], "gpt"),
        ]
        for (tool, args, reason) in cases {
            let r = try run(tool, args)
            XCTAssertEqual(r.code, 64, "\(tool) \(args): \(r.err)")
            XCTAssertTrue(r.err.contains(reason), "\(tool) \(args): expected '\(reason)' in: \(r.err)")
            XCTAssertFalse(r.err.contains("Missing value"), r.err)
        }
    }

    func testParseOnlyStopsAfterValidationBeforeAnyFile() throws {
        let args = ["-m", dir + "/missing.safetensors", "--length", "8", "-o", dir + "/out.tok"]
        XCTAssertEqual(try run("draft", args, env: ["BD3_PARSE_ONLY": "1"]).code, 0)
        XCTAssertEqual(try run("draft", args).code, 1, "without it the missing checkpoint is a runtime error")
        XCTAssertEqual(try run("draft", args + ["--steps", "0"], env: ["BD3_PARSE_ONLY": "1"]).code, 64, "validation still runs")
        XCTAssertEqual(try run("tokenize", [], env: ["BD3_PARSE_ONLY": "1"]).code, 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out.tok"))
    }

    // MARK: runtime errors, failed writes, temp files

    func testRuntimeErrorsExit1AndLeaveNothing() throws {
        let missing = dir + "/missing.tok"
        for (tool, args) in [("tokenize", ["stats", missing]), ("pack-blocks", ["-L", "8", "-i", missing, "-o", dir + "/p.tok"]),
                             ("train", ["--data", missing, "-o", dir + "/run"]), ("score", ["ppl", "-m", missing, "-i", missing]),
                             ("draft", ["-m", missing, "--length", "8", "-o", dir + "/d.tok"]),
                             ("remask", ["--ratio", "0.5", "-i", missing, "-o", dir + "/m.tok"]),
                             ("refine", ["-m", missing, "-i", missing, "-o", dir + "/r.tok"])] {
            let r = try run(tool, args)
            XCTAssertEqual(r.code, 1, "\(tool): \(r.err)")
            XCTAssertTrue(r.err.hasPrefix("Error: "), r.err)
        }
        XCTAssertEqual(leftovers(), [])
        // refine / remask on a stream that is not `samples`: a clear error up front, not "internal error".
        let ck = try trainCheckpoint()
        for (tool, args) in [("remask", ["--ratio", "0.5", "--policy", "random", "-i", validPath, "-o", dir + "/m.tok"]),
                             ("refine", ["-m", ck, "-i", validPath, "-o", dir + "/r.tok"])] {
            let r = try run(tool, args)
            XCTAssertEqual(r.code, 1, "\(tool): \(r.err)")
            XCTAssertTrue(r.err.contains("'sequences' stream") && r.err.contains("'samples' stream"), r.err)
            XCTAssertFalse(r.err.contains("internal error"), r.err)
        }
        // A run that fails after its output was opened leaves neither the output nor its temp file.
        let d = try run("draft", ["-m", ck, "-n", "2", "--length", "16", "-o", dir + "/d.tok"])
        XCTAssertEqual(d.code, 0, d.err)
        let m = try run("remask", ["--ratio", "0.5", "-i", dir + "/d.tok", "-o", dir + "/m.tok"])
        XCTAssertEqual(m.code, 0, m.err)
        let bad = try run("refine", ["-m", ck, "--block-size", "3", "-i", dir + "/m.tok", "-o", dir + "/r.tok"])
        XCTAssertEqual(bad.code, 64, bad.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r.tok"))
        XCTAssertEqual(leftovers(), [])
    }

    func testStdoutThatCannotBeWrittenIsExit1() throws {
        let ck = try trainCheckpoint()
        let ar = try trainCheckpoint("ar")
        XCTAssertEqual(try run("draft", ["-m", ck, "-n", "2", "--length", "16", "-o", dir + "/d.tok"]).code, 0)
        let cases: [(String, [String])] = [
            ("tokenize", ["stats", trainPath]),
            ("score", ["ppl", "-m", ck, "-i", validPath, "--batch", "2"]),
            ("score", ["gen", "--scorer", ar, "-i", dir + "/d.tok"]),
            ("draft", ["-m", ck, "-n", "1", "--length", "16"]),
            ("remask", ["--ratio", "0.5", "-i", dir + "/d.tok"]),
            ("refine", ["-m", ck, "-i", dir + "/d.tok"]),
            ("pack-blocks", ["-L", "4", "-i", trainPath.replacingOccurrences(of: "train.tok", with: "docs.tok")]),
        ]
        // pack-blocks reads documents: make a documents stream.
        try TinyRun.writeStream(dir + "/docs.tok", rows: TinyRun.rows(6), header: TinyRun.header(kind: .documents))
        for (tool, args) in cases {
            let r = try run(tool, args, stdout: "/dev/full")
            XCTAssertEqual(r.code, 1, "\(tool) \(args) > /dev/full: \(r.err)")
            XCTAssertTrue(r.err.contains("stdout"), "the message names stdout: \(r.err)")
        }
    }

    func testMetricsWriteFailureIsExit1NamingTheFile() throws {
        let r = try run("train", ["--data", trainPath, "--set", "hidden_size=32", "--set", "n_blocks=1", "--set", "n_heads=2",
                                  "--set", "cond_dim=16", "--batch", "4", "--steps", "2", "--log-every", "1",
                                  "--metrics", "/dev/full", "-o", dir + "/run"])
        XCTAssertEqual(r.code, 1, r.err)
        XCTAssertTrue(r.err.contains("/dev/full"), r.err)
        XCTAssertTrue(r.err.lowercased().contains("no space left"), r.err)
    }

    func testStaleTempFilesOfDeadProcessesAreSwept() throws {
        // A PID that existed and is gone: a finished child.
        let p = Process(); p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run(); p.waitUntilExit()
        let dead = p.processIdentifier
        let stale = ".x.tok.tmp-\(dead)-12345", live = ".x.tok.tmp-\(getpid())-1", other = ".y.tok.tmp-\(dead)-7"
        for n in [stale, live, other] { FileManager.default.createFile(atPath: dir + "/" + n, contents: Data([1, 2, 3])) }
        let r = try run("tokenize", ["stats", trainPath])
        XCTAssertEqual(r.code, 0, r.err)
        let out = try OutputFile(path: dir + "/x.tok")
        try out.write([1]); try out.commit()
        let left = Set(leftovers())
        XCTAssertFalse(left.contains(stale), "the dead process's temp file is swept")
        XCTAssertTrue(left.contains(live), "a live process's temp file stays")
        XCTAssertTrue(left.contains(other), "only the temp files of the path written")
        // Checkpoint temp files (".NAME.tmp-PID") of a killed train are swept by the next run in that directory.
        let runDir = dir + "/run"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: runDir + "/.last.safetensors.tmp-\(dead)", contents: Data([0]))
        _ = try trainCheckpoint()   // writes into dir/run-bd3, not run: sweep is per directory
        XCTAssertTrue(FileManager.default.fileExists(atPath: runDir + "/.last.safetensors.tmp-\(dead)"))
        let t = try run("train", ["--data", trainPath, "--set", "hidden_size=32", "--set", "n_blocks=1", "--set", "n_heads=2",
                                  "--set", "cond_dim=16", "--batch", "4", "--steps", "1", "-o", runDir])
        XCTAssertEqual(t.code, 0, t.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: runDir + "/.last.safetensors.tmp-\(dead)"))
    }

    // MARK: regressions (score)

    func testScorePPLRegressions() throws {
        let ck = try trainCheckpoint()
        // 1-token rows: exit 1 with the reason (it crashed with SIGILL, exit 132).
        try TinyRun.writeStream(dir + "/one.tok", rows: [[21], [3], [4]], header: {
            var h = TinyRun.header(); h.attributes["seq_len"] = "1"; return h }())
        var r = try run("score", ["ppl", "-m", ck, "-i", dir + "/one.tok"])
        XCTAssertEqual(r.code, 1, r.err)
        XCTAssertTrue(r.err.contains("-L 2"), r.err)
        // Var. NELBO at L' = L when the last batch holds one sequence: a number, not null (4 rows, batch 3).
        r = try run("score", ["ppl", "-m", ck, "-i", validPath, "--batch", "3", "--block-size", "16", "--clip", "0.45,0.95"])
        XCTAssertEqual(r.code, 0, r.err)
        let j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let vars = try XCTUnwrap(j["var_nelbo"] as? [[String: Any]])
        XCTAssertEqual(vars.count, 2)
        for v in vars { XCTAssertNotNil(v["var"] as? Double, "Var. NELBO is null: \(r.out)") }
        // --clip does not change the reported NLL (t draws of the main estimate come from their own stream).
        let plain = try run("score", ["ppl", "-m", ck, "-i", validPath, "--batch", "2", "--samples", "2", "--seed", "5"])
        let clipped = try run("score", ["ppl", "-m", ck, "-i", validPath, "--batch", "2", "--samples", "2", "--seed", "5",
                                        "--clip", "0.45,0.95", "--clip", "0.2,0.7"])
        XCTAssertEqual(plain.code, 0, plain.err); XCTAssertEqual(clipped.code, 0, clipped.err)
        let a = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(plain.out.utf8)) as? [String: Any])
        let b = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(clipped.out.utf8)) as? [String: Any])
        XCTAssertEqual(a["nll"] as? Double, b["nll"] as? Double)
    }

    func testClipSearchIgnoresSingleBlockBatches() {
        var acc = VarianceAccumulator()
        acc.add(blockMeans: [1, 2, 3])
        acc.add(blockMeans: [7])          // one sequence at L' = L: no variance, not NaN
        XCTAssertEqual(acc.batches, 1)
        XCTAssertEqual(acc.varNELBO, 1, accuracy: 1e-12)
        var other = VarianceAccumulator()
        other.add(blockMeans: [1, 1.5, 2]); other.add(blockMeans: [5])
        XCTAssertEqual(ClipSearch.best([(.base, acc), (ClipInterval(0.45, 0.95), other)]), ClipInterval(0.45, 0.95))
    }

    /// A 1-layer AR model at TinyRun's vocabulary and length (initialised by the caller).
    func tinyARModel() -> DiT {
        let config = ModelConfig(vocabSize: TinyRun.V, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: TinyRun.L,
                                 dropout: 0, causal: true)
        return DiT(config: config, maxBatch: 1, maxTokens: TinyRun.L)
    }

    /// A samples stream holding one 5-token record at TinyRun's header.
    func writeOneSample(_ path: String) throws {
        var h = TinyRun.header(kind: .samples)
        h.fields = [.confidence, .unmaskStep]
        let sink = MemorySink()
        let w = try TokenStreamWriter(sink: sink, header: h)
        try w.write(TokenRecord(id: 0, tokens: [21, 3, 4, 5, 6], confidence: [1, 1, 1, 1, 1], unmaskStep: [0, 1, 2, 3, 4], nfe: 4))
        try w.finish()
        try Data(sink.bytes).write(to: URL(fileURLWithPath: path))
    }

    /// A bare reference AR state_dict (no metadata) scores through the front door once --algo/--set give what it
    /// lacks; without them the refusal names the option.
    func testScoreGenOpensBareReferenceScorerWithFacts() throws {
        let L = TinyRun.L
        let m = tinyARModel()
        m.initialize(seed: 9)
        var w = SafetensorsWriter()
        for t in m.tensors {
            w.add(name: t.name, shape: t.shape, floats: UnsafeBufferPointer(rebasing: m.parameters[t.offset..<(t.offset + t.count)]))
        }
        let scorer = dir + "/bare-ar.safetensors"
        try w.write(path: scorer)
        try writeOneSample(dir + "/s.tok")
        let lacking = try run("score", ["gen", "--scorer", scorer, "-i", dir + "/s.tok"])
        XCTAssertNotEqual(lacking.code, 0, lacking.err)
        XCTAssertTrue(lacking.err.contains("--"), "the refusal names the option that fixes it: " + lacking.err)
        let r = try run("score", ["gen", "--scorer", scorer, "--algo", "ar", "--set", "n_heads=2", "--set", "length=\(L)",
                                  "-i", dir + "/s.tok"])
        XCTAssertEqual(r.code, 0, r.err)
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        XCTAssertNotNil(json?["gen_ppl"] as? Double, r.out)
        let cmd = try run("score", ["gen", "--scorer-cmd", "true", "--algo", "ar", "-t", dir + "/none.json", "-i", dir + "/s.tok"])
        XCTAssertEqual(cmd.code, 64, cmd.err)
    }

    func testScoreGenWithNonFiniteScorerIsExit1() throws {
        let V = TinyRun.V, L = TinyRun.L
        let m = tinyARModel()
        m.initialize(seed: 7)
        m.tensor(named: "backbone.output_layer.linear.weight")![0] = .nan
        let scorer = dir + "/nan.safetensors"
        try m.save(safetensors: scorer, metadata: ["algo": "ar", "block_size": "1", "seq_len": "\(L)", "vocab_size": "\(V)",
                                                  "mask_id": "23", "bos_id": "21", "eos_id": "21", "pad_id": "22",
                                                  "tokenizer_fingerprint": String(format: "%016llx", UInt64(0xABCD))])
        try writeOneSample(dir + "/s.tok")
        let r = try run("score", ["gen", "--scorer", scorer, "-i", dir + "/s.tok"])
        XCTAssertEqual(r.code, 1, r.err + r.out)
        XCTAssertTrue(r.err.contains("non-finite") || r.err.contains("not finite"), r.err)
        XCTAssertEqual(r.out, "", "no JSON with a null gen_ppl")
    }

    func testClipSearchWithOneBlockPerBatchIsAUsageError() throws {
        // At L' = L a batch of one row has one block: no variance, the search could pick nothing.
        let r = try run("train", ["--data", trainPath, "--valid", validPath, "--set", "hidden_size=32", "--set", "n_blocks=1",
                                  "--set", "n_heads=2", "--set", "cond_dim=16", "--block-size", "16", "--batch", "1",
                                  "--clip-search", "--steps", "1", "-o", dir + "/run"])
        XCTAssertEqual(r.code, 64, r.err)
        XCTAssertTrue(r.err.contains("--batch 2"), r.err)
    }

    func testBuffersBeyondTheMachinesMemoryAreRefusedBeforeAllocation() {
        XCTAssertGreaterThan(physicalMemoryBytes, 0)
        XCTAssertNoThrow(try requireMemory(1_048_576, for: "a small buffer", fix: "nothing"))
        XCTAssertThrowsError(try requireMemory(physicalMemoryBytes * 2, for: "a batch", fix: "lower --batch")) {
            let e = $0 as? UsageError
            XCTAssertNotNil(e)
            XCTAssertTrue(e?.description.contains("lower --batch") ?? false, "\($0)")
        }
    }

    // MARK: train defaults

    func testWarmupDefaultFitsTheRun() {
        XCTAssertEqual(TrainRequest.defaultWarmup(steps: 1000), 100, "the default --steps gets a warmup it completes")
        XCTAssertEqual(TrainRequest.defaultWarmup(steps: 1_000_000), 2500, "the reference's warmup on long runs")
    }
}
