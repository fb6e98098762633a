// A deterministic mutation fuzzer for the readers of untrusted files: the checkpoint front door (safetensors
// header, metadata, HF config.json), the token-stream reader and the tokenizer.json loader. Every mutant must
// either be read or be refused with an error; a trap kills the test process (the failure).
//
//   make test   a short bounded campaign (BD3_FUZZ_ITERATIONS, default 100 per target, fixed seed)
//   make fuzz   BD3_FUZZ_SECONDS per target (default 60) with a fresh seed, printed first
// The mutant under test is written to $BD3_FUZZ_ARTIFACTS/<target>.current (default: the temp directory) before it
// is read, so a crash leaves the input that caused it; rerun with BD3_FUZZ_SEED to reproduce.
import XCTest
import Foundation
@testable import BlockDiffusion

final class CheckpointFuzzTests: XCTestCase {
    struct Budget {
        let iterations: Int
        let seconds: Double?
        let seed: UInt64
        static var current: Budget {
            let env = ProcessInfo.processInfo.environment
            let seed = env["BD3_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0x5EED
            if let s = env["BD3_FUZZ_SECONDS"].flatMap({ Double($0) }) { return Budget(iterations: .max, seconds: s, seed: seed) }
            return Budget(iterations: env["BD3_FUZZ_ITERATIONS"].flatMap { Int($0) } ?? 100, seconds: nil, seed: seed)
        }
    }

    /// Byte-level and structure-aware mutations (digits in JSON, dtype names, lengths, truncation, splices).
    static func mutate(_ input: [UInt8], rng: inout Xoshiro256) -> [UInt8] {
        var b = input
        let rounds = 1 + Int(rng.next() % 4)
        let interesting: [[UInt8]] = [Array("0".utf8), Array("-1".utf8), Array("999999999999".utf8), Array("549755813888".utf8),
                                      Array("1e308".utf8), Array("NaN".utf8), Array("\"BF16\"".utf8), Array("\"F16\"".utf8),
                                      Array("\"I64\"".utf8), Array("null".utf8), Array("[]".utf8), Array("{}".utf8), Array("\"".utf8)]
        for _ in 0..<rounds where !b.isEmpty {
            let i = Int(rng.next() % UInt64(b.count))
            switch rng.next() % 9 {
            case 0: b[i] ^= UInt8(1 << (rng.next() % 8))
            case 1: b[i] = [0, 0xFF, 0x7F, 0x80, 0x30, 0x39, 0x2D, 0x22][Int(rng.next() % 8)]
            case 2: b.removeSubrange(i..<b.count)                                  // truncation
            case 3: b.removeSubrange(i..<min(b.count, i + 1 + Int(rng.next() % 16)))
            case 4: b.insert(contentsOf: interesting[Int(rng.next() % UInt64(interesting.count))], at: i)
            case 5:                                                                 // a digit run → another number
                var j = i
                while j < b.count && !(0x30...0x39).contains(b[j]) { j += 1 }
                var k = j
                while k < b.count && (0x30...0x39).contains(b[k]) { k += 1 }
                if j < k { b.replaceSubrange(j..<k, with: interesting[Int(rng.next() % 5)]) }
            case 6: for k in 0..<min(8, b.count) { b[k] = UInt8(truncatingIfNeeded: rng.next()) }   // header length
            case 7:                                                                 // a dtype swapped for another
                let names = ["\"F32\"", "\"F16\"", "\"BF16\"", "\"I32\"", "\"BOOL\"", "\"F64\""].map { Array($0.utf8) }
                if let from = names.first(where: { n in (0..<max(0, b.count - n.count)).contains { b[$0..<($0 + n.count)].elementsEqual(n) } }),
                   let at = (0..<(b.count - from.count)).first(where: { b[$0..<($0 + from.count)].elementsEqual(from) }) {
                    b.replaceSubrange(at..<(at + from.count), with: names[Int(rng.next() % UInt64(names.count))])
                }
            default:                                                                // duplicate a slice
                let n = min(b.count - i, 1 + Int(rng.next() % 64))
                b.insert(contentsOf: Array(b[i..<(i + n)]), at: Int(rng.next() % UInt64(b.count)))
            }
        }
        return b
    }

    /// Runs `body` on mutants of `seeds` until the budget is spent; returns how many were read without error.
    func campaign(_ name: String, seeds: [[UInt8]], _ body: ([UInt8], String) throws -> Void) -> (runs: Int, accepted: Int) {
        let budget = Budget.current
        var rng = Xoshiro256(seed: budget.seed &+ UInt64(name.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        let artifacts = ProcessInfo.processInfo.environment["BD3_FUZZ_ARTIFACTS"] ?? NSTemporaryDirectory()
        try? FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let current = (artifacts as NSString).appendingPathComponent("\(name)-\(getpid()).current")
        let start = Date()
        var runs = 0, accepted = 0
        while runs < budget.iterations {
            if let s = budget.seconds, Date().timeIntervalSince(start) > s { break }
            let m = Self.mutate(seeds[runs % seeds.count], rng: &rng)
            FileManager.default.createFile(atPath: current, contents: Data(m))
            do { try body(m, current); accepted += 1 } catch {}
            runs += 1
        }
        try? FileManager.default.removeItem(atPath: current)
        print("fuzz \(name): \(runs) mutants, \(accepted) accepted, seed \(budget.seed)")
        return (runs, accepted)
    }

    func ourCheckpointBytes() throws -> [UInt8] {
        let c = ModelConfig(vocabSize: 12, hiddenSize: 8, nBlocks: 1, nHeads: 2, condDim: 4, length: 8)
        let m = DiT(config: c, maxBatch: 1, maxTokens: 1, inference: true)
        m.initialize(seed: 1)
        let p = NSTemporaryDirectory() + "bd3-fuzz-seed-\(getpid()).safetensors"
        defer { try? FileManager.default.removeItem(atPath: p) }
        try m.save(safetensors: p, metadata: ["algo": "bd3", "block_size": "4", "seq_len": "8", "mask_id": "11", "bos_id": "10",
                                              "eos_id": "10", "tokenizer_fingerprint": "00000000000000ab", "noise": "loglinear"],
                   extraScalars: ["sampling_eps_min": 0.3, "sampling_eps_max": 0.8])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
    }

    /// Opening, loading and one forward: what `score` and `draft` do with a checkpoint before any data.
    static func exercise(_ ck: Checkpoint) throws {
        let m = try ck.model(maxBatch: 1, maxTokens: 2 * ck.info.blockSize)
        let toks = [Int32](repeating: ck.info.special.mask, count: 2 * ck.info.blockSize)
        _ = toks.withUnsafeBufferPointer {
            m.forward(tokens: $0, batch: 1, layout: ck.info.algorithm == .ar ? .causal : .blockCausal(blockSize: ck.info.blockSize),
                      sigma: nil, training: false, dropoutSeed: 0)
        }
    }

    func testFuzzOurCheckpoints() throws {
        let r = campaign("checkpoint", seeds: [try ourCheckpointBytes()]) { _, path in try Self.exercise(try Checkpoint.open(path)) }
        XCTAssertGreaterThan(r.runs, 0)
    }

    func testFuzzHFConfigAndWeights() throws {
        let src = try referenceFixture("v512/hf")
        let dir = NSTemporaryDirectory() + "bd3-fuzz-hf-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src + "/config.json")))
        let weights = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src + "/model.safetensors")))
        // config.json mutants with the real weights, then weight mutants with the real config.json.
        try Data(weights).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        _ = campaign("hf-config", seeds: [config]) { m, _ in
            try Data(m).write(to: URL(fileURLWithPath: dir + "/config.json"))
            try Self.exercise(try Checkpoint.open(dir, overrides: try .parse(algo: nil, blockSize: nil, config: nil, sets: ["bos_id=1"])))
        }
        try Data(config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        _ = campaign("hf-weights", seeds: [weights]) { m, _ in
            try Data(m).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
            try Self.exercise(try Checkpoint.open(dir))
        }
    }

    func testFuzzTokenStreamReader() throws {
        let dir = TinyRun.tempDir("fuzz-stream")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var seeds: [[UInt8]] = []
        for compress in [true, false] {
            let p = dir + "/s\(compress).tok"
            let out = try OutputFile(path: p, allowTerminal: true)
            let w = try TokenStreamWriter(sink: out, header: TinyRun.header(), compress: compress)
            for (i, r) in TinyRun.rows(3).enumerated() {
                try w.write(TokenRecord(id: UInt64(i), tokens: r))
            }
            try w.finish(); try out.commit()
            seeds.append([UInt8](try Data(contentsOf: URL(fileURLWithPath: p))))
        }
        let r = campaign("token-stream", seeds: seeds) { m, _ in
            let reader = try TokenStreamReader(source: MemorySource(m, maxRead: 7), name: "mutant")
            var n = 0
            while let rec = try reader.next() { n += rec.tokens.count; if n > 1 << 20 { break } }
        }
        XCTAssertGreaterThan(r.runs, 0)
    }

    func testFuzzTokenizerJSON() throws {
        guard let url = Bundle.module.url(forResource: "ours", withExtension: "json", subdirectory: "Fixtures/tokenizer") else {
            throw XCTSkip("tokenizer fixture missing")
        }
        let seed = [UInt8](try Data(contentsOf: url))
        let r = campaign("tokenizer-json", seeds: [seed]) { m, _ in
            let tok = try BPETokenizer.fromHFJSON(Data(m), source: "mutant", appendMissingSpecials: true)
            _ = tok.encode(Array("The quick brown fox <|endoftext|> jumps".utf8))
        }
        XCTAssertGreaterThan(r.runs, 0)
    }
}
