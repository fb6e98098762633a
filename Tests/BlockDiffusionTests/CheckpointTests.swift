// The checkpoint front door (Checkpoint.open): every layout the reference writes (fixtures written by the real
// bd3lms code, Tests/scripts/make_reference_checkpoints.py), parity with its NLL and sampler probabilities at
// V = 512 and V = 50258, every refusal (exit 1, the file, the key, the fix), the crashers of the checkpoint
// audit as regression tests, byte-reproducible files and the HF export.
import XCTest
import Foundation
@testable import BlockDiffusion

func referenceFixture(_ rel: String) throws -> String {
    guard let base = Bundle.module.url(forResource: "reference", withExtension: nil, subdirectory: "Fixtures") else {
        throw XCTSkip("Fixtures/reference missing")
    }
    return base.appendingPathComponent(rel).path
}

final class CheckpointTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = TinyRun.tempDir("ckpt") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A sequences stream of `rows` with the reference's GPT-2-style ids (BOS = EOS = V−2, mask = V−1), no fingerprint.
    func stream(_ rows: [[Int32]], V: Int) throws -> String {
        let p = dir + "/data-\(V).tok"
        let h = StreamHeader(kind: .sequences, vocabSize: V, tokenizerFingerprint: 0,
                             special: SpecialTokens(bos: Int32(V - 2), eos: Int32(V - 2), mask: Int32(V - 1), pad: Int32(V - 2)),
                             attributes: ["seq_len": "\(rows[0].count)"])
        try TinyRun.writeStream(p, rows: rows, header: h)
        return p
    }

    func rows(_ f: SafetensorsFile, _ name: String, _ L: Int) throws -> [[Int32]] {
        let x = try f.int32s(name)
        return stride(from: 0, to: x.count, by: L).map { Array(x[$0..<($0 + L)]) }
    }

    func expectError(_ body: @autoclosure () throws -> Any, contains parts: [String], usage: Bool = false,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            if usage { XCTAssert(e is UsageError, "expected a usage error, got \(type(of: e)): \(e)", file: file, line: line) }
            else { XCTAssert(e is ToolError, "expected a ToolError, got \(type(of: e)): \(e)", file: file, line: line) }
            for p in parts { XCTAssert("\(e)".contains(p), "'\(p)' not in: \(e)", file: file, line: line) }
        }
    }

    // MARK: layouts

    func testSEDDNoiseNamesAgree() {
        XCTAssertEqual(Set(CheckpointInfo.seddNoises), Set(SEDDNoise.allCases.map(\.rawValue)))
    }

    func testParameterShapesMatchTheModel() {
        for causal in [false, true] {
            let c = ModelConfig(vocabSize: 50, hiddenSize: 16, nBlocks: 3, nHeads: 2, condDim: 8, length: 8, causal: causal)
            let m = DiT(config: c, maxBatch: 1, maxTokens: 1, inference: true)
            XCTAssertEqual(c.parameterShapes.map(\.name), m.tensors.map(\.name))
            XCTAssertEqual(c.parameterShapes.map(\.shape), m.tensors.map(\.shape))
        }
    }

    func testEveryReferenceLayoutOpensToTheSameModel() throws {
        let hf = try Checkpoint.open(try referenceFixture("v512/hf"))
        XCTAssertEqual(hf.layout, .huggingFace)
        XCTAssertEqual(hf.info.algorithm, .bd3)
        XCTAssertEqual(hf.info.blockSize, 4)
        XCTAssertEqual(hf.info.length, 16)
        XCTAssertEqual(hf.info.special.mask, 511)
        XCTAssertEqual(hf.info.config.nHeads, 2)
        XCTAssertEqual(hf.info.interval, ClipInterval(Double(Float(0.45)), Double(Float(0.95))))
        let hm = try hf.model(maxBatch: 1, maxTokens: 1)
        let want = Array(hm.parameters)
        let variants: [(String, CheckpointOverrides)] = [
            ("v512/hf-sharded", .init()), ("v512/bare/dit.safetensors", .init()), ("v512/lightning.safetensors", .init()),
            ("v512/lightning-names.safetensors", try .parse(algo: nil, blockSize: 4, config: nil, sets: ["n_heads=2", "length=16"])),
        ]
        for (rel, o) in variants {
            let ck = try Checkpoint.open(try referenceFixture(rel), overrides: o)
            var c = ck.info.config
            c.dropout = hf.info.config.dropout   // config.json records the dropout it was trained with; the others default it
            XCTAssertEqual(c, hf.info.config, rel)
            XCTAssertEqual(ck.info.blockSize, 4, rel)
            XCTAssertEqual(ck.info.algorithm, .bd3, rel)
            let m = try ck.model(maxBatch: 1, maxTokens: 1)
            XCTAssertEqual(Array(m.parameters), want, rel)
        }
        // The converted .ckpt carries the EMA weights (the live ones differ) and the facts of its hyper_parameters.
        let conv = try Checkpoint.open(try referenceFixture("v512/lightning.safetensors"))
        XCTAssertEqual(conv.layout, .ours)
        XCTAssertEqual(conv.info.metadata["source"], "lightning.ckpt (ema)")
    }

    func testGPT2VocabularyPairsWithoutFlags() throws {
        let ck = try Checkpoint.open(try referenceFixture("v50258/hf"))
        XCTAssertEqual(ck.info.vocabSize, 50258)
        XCTAssertEqual(ck.info.special, SpecialTokens(bos: 50256, eos: 50256, mask: 50257, pad: 50256))
        XCTAssertEqual(ck.locations["backbone.vocab_embed.embedding"]?.file.entry(ck.locations["backbone.vocab_embed.embedding"]!.name)?.dtype, "BF16")
    }

    // MARK: parity with the reference (its outputs on the same weights)

    func checkParity(_ v: String) throws {
        let e = try SafetensorsFile(path: try referenceFixture("\(v)/expect.safetensors"))
        let V = Int(e.metadata["vocab_size"]!)!, L = 16, bs = 4
        let data = try stream(try rows(e, "input.x0", L), V: V)
        // Exact NLL at L' = 1 (every token masked; the reference's DIT built with block_size 1).
        let (m, info, d) = try Perplexity.load(checkpoint: try referenceFixture("\(v)/hf"), data: data, batch: 2, blockSize: 1)
        var o = PerplexityOptions(); o.blockSize = 1
        let r = Perplexity.evaluate(model: m, info: info, data: d, options: o)
        let want = Double(try e.floats("expect.nll_l1")[0])
        XCTAssertTrue(r.exact)
        XCTAssertEqual(r.nll, want, accuracy: 1e-6 * want, "\(v): exact NLL \(r.nll) vs the reference's \(want)")

        // The sampler's conditional probabilities: block 1 given clean block 0, no KV cache (block-causal window).
        let ck = try Checkpoint.open(try referenceFixture("\(v)/hf"))
        let model = try ck.model(maxBatch: 2, maxTokens: 2 * bs)
        let window = try e.int32s("input.window")
        let logits = window.withUnsafeBufferPointer {
            model.forward(tokens: $0, batch: 2, layout: .blockCausal(blockSize: bs), sigma: nil, training: false, dropoutSeed: 0)
        }
        let lpX0 = try e.floats("expect.window.lp_x0"), maxLp = try e.floats("expect.window.max_logp")
        let full = e.entry("expect.window.logp") != nil ? try e.floats("expect.window.logp") : nil
        let x0 = try e.int32s("input.x0")
        var row = [Float](repeating: 0, count: V)
        let rowsOut = logits.count / (2 * V)
        XCTAssertEqual(rowsOut, bs)
        for b in 0..<2 {
            for i in 0..<bs {
                let base = (b * rowsOut + i) * V
                row.withUnsafeMutableBufferPointer { out in
                    LossHeads.subsLogProbs(UnsafePointer(logits.baseAddress! + base), V: V, xt: Int32(V - 1), maskId: Int32(V - 1), out: out.baseAddress!)
                }
                let k = b * bs + i
                let target = Int(x0[b * L + bs + i])
                XCTAssertEqual(row[target], lpX0[k], accuracy: 1e-6 * max(1, abs(lpX0[k])), "\(v) lp_x0[\(k)]")
                XCTAssertEqual(row[0..<(V - 1)].max()!, maxLp[k], accuracy: 1e-6 * max(1, abs(maxLp[k])), "\(v) max logp[\(k)]")
                if let full {
                    for j in 0..<(V - 1) {
                        XCTAssertEqual(row[j], full[k * V + j], accuracy: 1e-6 * max(1, abs(full[k * V + j])), "\(v) logp[\(k), \(j)]")
                    }
                }
            }
        }
    }

    func testParityWithReferenceV512() throws { try checkParity("v512") }

    /// draft's per-step confidence on the reference's weights: with block 0 as the prompt, the token the first
    /// forward of block 1 unmasks carries the reference's p_x0 of that token (nucleus 1), through the KV cache path.
    func testDraftConfidenceMatchesReferenceProbabilities() throws {
        let e = try SafetensorsFile(path: try referenceFixture("v512/expect.safetensors"))
        let V = 512, bs = 4
        let first = try e.int32s("input.first"), logp = try e.floats("expect.first.logp")
        let prompt = dir + "/prompt.tok"
        try TinyRun.writeStream(prompt, rows: [Array(first[0..<bs])], header: StreamHeader(kind: .sequences, vocabSize: V,
            special: SpecialTokens(bos: 510, eos: 510, mask: 511, pad: 510), attributes: ["seq_len": "\(bs)"]))
        for seed in 0..<3 {
            let out = dir + "/conf\(seed).tok"
            let r = try runCLI(try cliBinary("draft"), ["-m", try referenceFixture("v512/hf"), "--prompt-tokens", prompt, "-n", "1",
                                                       "--length", "\(2 * bs)", "--seed", "\(seed)", "--bos-id", "510", "-o", out])
            XCTAssertEqual(r.code, 0, r.err)
            let rec = try TokenStreamReader(source: try openInput(out), name: out).next()!
            XCTAssertEqual(Array(rec.tokens[0..<bs]), Array(first[0..<bs]))
            let steps = rec.unmaskStep!, conf = rec.confidence!
            let firstStep = (bs..<(2 * bs)).map { steps[$0] }.min()!
            var checked = 0
            for pos in bs..<(2 * bs) where steps[pos] == firstStep {
                let want = exp(Double(logp[(pos - bs) * V + Int(rec.tokens[pos])]))
                XCTAssertEqual(Double(conf[pos]), want, accuracy: 1e-6 * want, "seed \(seed) position \(pos)")
                checked += 1
            }
            XCTAssertEqual(checked, 1)
        }
    }
    func testParityWithReferenceV50258() throws { try checkParity("v50258") }

    // MARK: refusals (the file, the key, the fix)

    func testRefusals() throws {
        expectError(try Checkpoint.open(try referenceFixture("v512/lightning.ckpt")),
                    contains: ["lightning.ckpt", "python3 pipelines/convert/lightning_to_safetensors.py", "lightning.safetensors"])
        expectError(try Checkpoint.open(try referenceFixture("v512/lightning-names.safetensors")), contains: ["n_heads", "--set n_heads="])
        expectError(try Checkpoint.open(try referenceFixture("v512/lightning-names.safetensors"),
                                        overrides: try .parse(algo: nil, blockSize: nil, config: nil, sets: ["n_heads=2", "length=16"])),
                    contains: ["block size", "--block-size"])
        expectError(try Checkpoint.open(try referenceFixture("v512/lightning-names.safetensors"),
                                        overrides: try .parse(algo: nil, blockSize: 4, config: nil, sets: ["n_heads=4", "length=16"])),
                    contains: ["inv_freq", "n_heads"])
        expectError(try Checkpoint.open(try referenceFixture("v512/hf"), overrides: try .parse(algo: "mdlm", blockSize: nil, config: nil, sets: [])),
                    contains: ["--algo mdlm"], usage: true)
        expectError(try CheckpointOverrides.parse(algo: "gpt", blockSize: nil, config: nil, sets: []), contains: ["--algo"], usage: true)
        expectError(try CheckpointOverrides.parse(algo: nil, blockSize: 0, config: nil, sets: []), contains: ["--block-size"], usage: true)
        expectError(try CheckpointOverrides.parse(algo: nil, blockSize: nil, config: nil, sets: ["ema=1"]), contains: ["ema"], usage: true)
        expectError(try Checkpoint.open(dir), contains: [dir, "config.json"])
        expectError(try Checkpoint.open(dir + "/nothing.safetensors"), contains: ["does not exist"])

        // config.json without block_size: refused with the option (an L'=4 model must never be read as MDLM).
        let hfDir = dir + "/hf"
        try FileManager.default.copyItem(atPath: try referenceFixture("v512/hf"), toPath: hfDir)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: hfDir + "/config.json"))) as! [String: Any]
        cfg.removeValue(forKey: "block_size")
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: hfDir + "/config.json"))
        expectError(try Checkpoint.open(hfDir), contains: [hfDir, "block_size", "--block-size"])
        XCTAssertEqual(try Checkpoint.open(hfDir, overrides: try .parse(algo: nil, blockSize: 4, config: nil, sets: [])).info.blockSize, 4)
        cfg["block_size"] = 5
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: hfDir + "/config.json"))
        expectError(try Checkpoint.open(hfDir), contains: ["block_size 5", "divide"])
        cfg["block_size"] = 4; cfg["n_heads"] = "two"
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: hfDir + "/config.json"))
        expectError(try Checkpoint.open(hfDir), contains: ["config.json", "n_heads"])
        // A missing shard.
        let sh = dir + "/sharded"
        try FileManager.default.copyItem(atPath: try referenceFixture("v512/hf-sharded"), toPath: sh)
        try FileManager.default.removeItem(atPath: sh + "/model-00003-of-00005.safetensors")
        expectError(try Checkpoint.open(sh), contains: ["model-00003-of-00005.safetensors", "missing"])
    }

    /// Our own file with `meta` changed (nil removes a key); `tensors` edits the tensor list.
    func ourFile(_ change: [String: String?] = [:], weights: ((inout [Float]) -> Void)? = nil) throws -> String {
        let c = ModelConfig(vocabSize: 24, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: 16)
        let m = DiT(config: c, maxBatch: 1, maxTokens: 1, inference: true)
        m.initialize(seed: 3)
        if let weights {
            var p = Array(m.parameters)
            weights(&p)
            _ = m.parameters.update(fromContentsOf: p)
        }
        var meta = ["algo": "bd3", "block_size": "4", "seq_len": "16", "mask_id": "23", "bos_id": "21", "eos_id": "21",
                    "pad_id": "22", "tokenizer_fingerprint": "000000000000abcd", "vocab_size": "24"]
        for (k, v) in change { meta[k] = v }
        let p = dir + "/ours-\(UUID().uuidString).safetensors"
        try m.save(safetensors: p, metadata: meta)
        return p
    }

    func testCrashersOfTheAuditAreRefused() throws {
        // Out-of-range special ids (an out-of-bounds write in the AR head), block size 0 (division by zero),
        // a block size that does not divide L (silently clamped before), unparsable values (defaults before).
        for (k, v, key) in [("mask_id", "24", "mask_id"), ("mask_id", "-7", "mask_id"), ("bos_id", "99", "bos_id"),
                            ("block_size", "0", "block_size"), ("block_size", "5", "block_size"), ("block_size", "x", "block_size"),
                            ("tokenizer_fingerprint", "zz", "tokenizer_fingerprint"), ("seq_len", "17", "seq_len"),
                            ("algo", "gpt", "algo"), ("noise", "nope", "noise"), ("sampling_eps_min", "nan", "sampling_eps_min"),
                            ("clip_by_block", "{", "clip_by_block"), ("vocab_size", "25", "vocab_size"), ("mask_id", "-1", "mask_id")] {
            let p = try ourFile([k: v])
            expectError(try Checkpoint.open(p), contains: [p, key])
        }
        let noBlock = try ourFile(["block_size": nil])
        expectError(try Checkpoint.open(noBlock), contains: [noBlock, "block_size", "--block-size"])
        // A NaN weight: refused at load, naming the tensor (was a crash in JSON serialisation after the table).
        let nan = try ourFile(weights: { $0[5] = .nan })
        expectError(try Checkpoint.open(nan).model(maxBatch: 1, maxTokens: 1), contains: [nan, "vocab_embed.embedding", "non-finite"])
        // A model_config with huge sizes: refused before anything is allocated (was 51 GB).
        let huge = try ourFile(["model_config": #"{"vocabSize":50258,"hiddenSize":32768,"nBlocks":1024,"nHeads":16,"condDim":128,"length":16}"#, "vocab_size": "50258"])
        expectError(try Checkpoint.open(huge), contains: [huge, "shape"])
        let absurd = try ourFile(["model_config": #"{"vocabSize":4000000000,"hiddenSize":16,"nBlocks":1,"nHeads":2,"condDim":8,"length":16}"#])
        expectError(try Checkpoint.open(absurd), contains: [absurd, "model_config", "vocabulary size"])
        let garbage = try ourFile(["model_config": "{not json"])
        expectError(try Checkpoint.open(garbage), contains: [garbage, "model_config"])
    }

    /// Rewrites one tensor's header entry of a safetensors file (same byte length keeps the data offsets valid).
    func patchHeader(_ path: String, _ from: String, _ to: String) throws -> String {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var n = 0
        for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
        var header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
        XCTAssert(header.contains(from), "\(from) not in the header")
        header = header.replacingOccurrences(of: from, with: to)
        var h = Array(header.utf8)
        while h.count < n { h.append(0x20) }
        let count = h.count
        var out: [UInt8] = (0..<8).map { UInt8((count >> (8 * $0)) & 0xff) }
        out += h
        out += bytes[(8 + n)...]
        bytes = out
        let p = path + ".patched.safetensors"
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func testCorruptTensorHeadersAreRefused() throws {
        let p = try ourFile()
        // The shape [2^39, 2^39] overflowed the element count.
        let big = try patchHeader(p, #""backbone.blocks.0.norm1.weight":{"dtype":"F32","shape":[16]"#,
                                  #""backbone.blocks.0.norm1.weight":{"dtype":"F32","shape":[549755813888,549755813888]"#)
        expectError(try Checkpoint.open(big), contains: [big, "norm1.weight"])
        // Integer data labelled as weights.
        let ints = try patchHeader(p, #""backbone.blocks.0.norm1.weight":{"dtype":"F32""#, #""backbone.blocks.0.norm1.weight":{"dtype":"I32""#)
        expectError(try Checkpoint.open(ints), contains: [ints, "norm1.weight", "dtype I32"])
    }

    /// A cl100k-sized ranks file is refused: its pre-tokenizer is not GPT-2's, so the ids would silently differ.
    func testTiktokenWithAnotherPatternRefused() {
        let lines = (0..<100_256).map { "\(Data("t\($0)".utf8).base64EncodedString()) \($0)" }
        expectError(try BPETokenizer.fromTiktoken(Data(lines.joined(separator: "\n").utf8), source: "cl100k_base.tiktoken"),
                    contains: ["cl100k_base.tiktoken", "100256 ranks", "gpt2.tiktoken"])
    }

    func testContentChecksumCatchesChangedWeightsAndDtypes() throws {
        let c = ModelConfig(vocabSize: 24, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: 16)
        let m = DiT(config: c, maxBatch: 1, maxTokens: 1, inference: true)
        m.initialize(seed: 3)
        let p = dir + "/sum.safetensors"
        try CheckpointDigest.save(m, path: p, metadata: ["algo": "bd3", "block_size": "4", "mask_id": "23"])
        XCTAssertNotNil(try Checkpoint.open(p).info)
        // One flipped bit in the data region.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
        bytes[bytes.count - 3] ^= 0x10
        let flipped = dir + "/flipped.safetensors"
        try Data(bytes).write(to: URL(fileURLWithPath: flipped))
        expectError(try Checkpoint.open(flipped), contains: [flipped, "weights_crc32c", "corrupt"])
        // The same bytes under another dtype name (what relabelling F16 data as BF16 does).
        let relabelled = try patchHeader(p, #""backbone.blocks.0.norm1.weight":{"dtype":"F32""#, #""backbone.blocks.0.norm1.weight":{"dtype":"I32""#)
        expectError(try Checkpoint.open(relabelled), contains: [relabelled, "weights_crc32c"])
    }

    // MARK: ours → theirs, reproducibility

    func testCheckpointBytesAreReproducible() throws {
        let a = try ourFile(), b = try ourFile()
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a)), try Data(contentsOf: URL(fileURLWithPath: b)))
    }

    func testHFExportRoundTrip() throws {
        let src = try ourFile()
        let out = dir + "/export"
        try HFExport.export(source: src, to: out)
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
        XCTAssertEqual(cfg["model_type"] as? String, "bd3lm")
        XCTAssertEqual(cfg["block_size"] as? Int, 4)
        XCTAssertEqual(cfg["var_min"] as? Bool, true)
        XCTAssertEqual(cfg["hidden_dim"] as? Int, 16)
        let a = try Checkpoint.open(src), b = try Checkpoint.open(out)
        XCTAssertEqual(b.info.config, a.info.config)
        XCTAssertEqual(b.info.special, a.info.special)
        XCTAssertEqual(b.info.fingerprint, a.info.fingerprint)
        let ma = try a.model(maxBatch: 1, maxTokens: 1), mb = try b.model(maxBatch: 1, maxTokens: 1)
        XCTAssertEqual(Array(mb.parameters), Array(ma.parameters))
        let f = try SafetensorsFile(path: out + "/model.safetensors")
        XCTAssertNotNil(f.entry("sampling_eps_min"))
        // Without our metadata the directory is still a valid reference HF directory with the same facts.
        let plain = dir + "/plain"
        try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: out + "/config.json", toPath: plain + "/config.json")
        var w = SafetensorsWriter()
        for n in f.names { let e = f.entry(n)!; w.add(name: n, shape: e.shape, floats: try f.floats(n)) }
        try w.write(path: plain + "/model.safetensors", metadata: ["format": "pt"])
        let c = try Checkpoint.open(plain)
        XCTAssertEqual(c.layout, .huggingFace)
        XCTAssertEqual(c.info.config.hiddenSize, 16)
        XCTAssertEqual(c.info.blockSize, 4)
        XCTAssertEqual(c.info.algorithm, .bd3)
    }

    /// An NLL above 709 nats overflows the PPL: the JSON says null instead of crashing after the table printed.
    func testHugeNLLWritesValidJSON() throws {
        let r = PerplexityResult(nll: 800, tokens: 10, sequences: 1, samples: 1, interval: nil, exact: true, varNELBO: [(ClipInterval(0.1, 0.2), .nan)])
        let j = try JSONSerialization.jsonObject(with: Data(r.json.utf8)) as! [String: Any]
        XCTAssert(j["ppl"] is NSNull)
        XCTAssertEqual(j["nll"] as? Double, 800)
    }

    /// Every algorithm survives ours → HF config.json → the front door with only the reference's facts.
    func testHFConfigOfEveryAlgorithmReadsBack() throws {
        for algo in Algorithm.allCases {
            let c = ModelConfig(vocabSize: 24, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: 16,
                                causal: algo == .ar, timeConditioning: algo == .sedd)
            let m = DiT(config: c, maxBatch: 1, maxTokens: 1, inference: true)
            m.initialize(seed: 4)
            let src = dir + "/\(algo).safetensors"
            try CheckpointDigest.save(m, path: src, metadata: ["algo": algo.rawValue, "block_size": algo == .bd3 ? "4" : (algo == .ar ? "1" : "16"),
                                                               "mask_id": "23", "bos_id": "21"],
                                      extraScalars: algo == .bd3 ? ["sampling_eps_min": 0.2, "sampling_eps_max": 0.7] : [:])
            let out = dir + "/hf-\(algo)"
            try HFExport.export(source: src, to: out)
            let f = try SafetensorsFile(path: out + "/model.safetensors")
            XCTAssertEqual(f.entry("sampling_eps_min") != nil, algo == .bd3, "\(algo): var_min buffers only for bd3")
            let plain = dir + "/plain-\(algo)"
            try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: out + "/config.json", toPath: plain + "/config.json")
            var w = SafetensorsWriter()
            for n in f.names { let e = f.entry(n)!; w.add(name: n, shape: e.shape, floats: try f.floats(n)) }
            try w.write(path: plain + "/model.safetensors", metadata: ["format": "pt"])
            let ck = try Checkpoint.open(plain)
            XCTAssertEqual(ck.info.algorithm, algo)
            XCTAssertEqual(ck.info.blockSize, algo == .bd3 ? 4 : (algo == .ar ? 1 : 16))
            var got = ck.info.config
            got.dropout = c.dropout
            XCTAssertEqual(got, c, "\(algo)")
            if algo == .bd3 { XCTAssertEqual(ck.info.interval, ClipInterval(Double(Float(0.2)), Double(Float(0.7)))) }
        }
    }

    // MARK: the tools

    func testTrainExportsARunDirectory() throws {
        let run = dir + "/run"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: try ourFile(), toPath: run + "/best.safetensors")
        let r = try runCLI(try cliBinary("train"), ["--export-hf", dir + "/hf", "-o", run])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertEqual(try Checkpoint.open(dir + "/hf").info.blockSize, 4)
        let missing = try runCLI(try cliBinary("train"), ["--export-hf", dir + "/hf2", "-o", dir + "/nowhere"])
        XCTAssertEqual(missing.code, 1, missing.err)
        XCTAssert(missing.err.contains("best.safetensors"), missing.err)
    }

    func testScoreRefusesCorruptCheckpointsWithExit1() throws {
        let score = try cliBinary("score")
        let data = dir + "/tiny.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(4))
        let good = try ourFile()
        let ok = try runCLI(score, ["ppl", "-m", good, "-i", data, "--batch", "2"])
        XCTAssertEqual(ok.code, 0, ok.err)
        for (k, v) in [("mask_id", "4000"), ("block_size", "0"), ("tokenizer_fingerprint", "garbage")] {
            let p = try ourFile([k: v])
            let r = try runCLI(score, ["ppl", "-m", p, "-i", data, "--batch", "2"])
            XCTAssertEqual(r.code, 1, "\(k)=\(v): \(r.err)")
            XCTAssert(r.err.contains(p) && r.err.contains(k), r.err)
        }
        let nan = try ourFile(weights: { $0[7] = .nan })
        let r = try runCLI(score, ["ppl", "-m", nan, "-i", data, "--batch", "2"])
        XCTAssertEqual(r.code, 1, r.err)
        XCTAssert(r.err.contains("non-finite"), r.err)
        let usage = try runCLI(score, ["ppl", "-m", good, "-i", data, "--set", "bogus=1"])
        XCTAssertEqual(usage.code, 64, usage.err)
    }

    func testToolsOnReferenceCheckpoints() throws {
        let draft = try cliBinary("draft"), score = try cliBinary("score")
        let e = try SafetensorsFile(path: try referenceFixture("v50258/expect.safetensors"))
        let data = try stream(try rows(e, "input.x0", 16), V: 50258)
        let r = try runCLI(score, ["ppl", "-m", try referenceFixture("v50258/hf"), "-i", data, "--block-size", "1", "--batch", "2"])
        XCTAssertEqual(r.code, 0, r.err)
        let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let want = Double(try e.floats("expect.nll_l1")[0])
        XCTAssertEqual(j["nll"] as! Double, want, accuracy: 1e-6 * want)
        // GPT-2 pairing: BOS fixed at 50256 without flags.
        let out = dir + "/d.tok"
        let d = try runCLI(draft, ["-m", try referenceFixture("v50258/hf"), "-n", "1", "--length", "8", "-o", out])
        XCTAssertEqual(d.code, 0, d.err)
        let recs = try TokenStreamReader(source: try openInput(out), name: out)
        let rec = try recs.next()!
        XCTAssertEqual(rec.tokens.first, 50256)
        XCTAssertFalse(rec.tokens.contains(50257))
        // V = 512 has no known BOS: asked for; a .ckpt is refused with the converter command; bad options are usage errors.
        let noBOS = try runCLI(draft, ["-m", try referenceFixture("v512/hf"), "-n", "1", "--length", "8", "-o", out])
        XCTAssertEqual(noBOS.code, 1)
        XCTAssert(noBOS.err.contains("--bos-id"), noBOS.err)
        let ckpt = try runCLI(draft, ["-m", try referenceFixture("v512/lightning.ckpt"), "-n", "1", "--length", "8", "-o", out])
        XCTAssertEqual(ckpt.code, 1)
        XCTAssert(ckpt.err.contains("pipelines/convert/lightning_to_safetensors.py"), ckpt.err)
        let usage = try runCLI(draft, ["-m", try referenceFixture("v512/hf"), "-n", "1", "--length", "8", "--algo", "gpt", "-o", out])
        XCTAssertEqual(usage.code, 64, usage.err)
        let contradiction = try runCLI(draft, ["-m", try referenceFixture("v512/hf"), "-n", "1", "--length", "8", "--algo", "mdlm", "-o", out])
        XCTAssertEqual(contradiction.code, 64, contradiction.err)
        let bare = try runCLI(draft, ["-m", try referenceFixture("v512/lightning-names.safetensors"), "-n", "1", "--length", "8",
                                      "--bos-id", "510", "--block-size", "4", "--set", "n_heads=2", "--set", "length=16", "-o", out])
        XCTAssertEqual(bare.code, 0, bare.err)
    }
}
