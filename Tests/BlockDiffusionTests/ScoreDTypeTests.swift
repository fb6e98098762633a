// score ppl --dtype / score gen --dtype: bf16 weights against fp32 on tiny models, within the stated tolerance,
// and the JSON says which.
//
// score ppl --dtype bf16 rounds the model's matrices to bf16 (the values the bf16 engine computes with) and runs
// the same fp32 forward; score gen --dtype bf16 runs the AR scorer on the inference engine over bf16 matrices.
// Tolerance: |Δ NLL| ≤ 2e-3 nats/token for score ppl (measured on the tiny trained models: ≈ 1.2e-4 AR, 6e-5 BD3)
// and ≤ 1e-2 nats/token per sample for score gen (the perturbed random scorer has large logits; measured ≈ 3.2e-3).
// The bf16 engine scorer must agree with the fp32 scorer of the bf16-rounded checkpoint to 1e-4 nats/token: the
// difference between the two is then the weights alone, not the engine path.
import XCTest
@testable import BlockDiffusion

let bf16NLLTolerance = 2e-3
let bf16GenNLLTolerance = 1e-2

final class ScoreDTypeTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = TinyRun.tempDir("score-dtype") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// The rounded model holds exactly the bf16 engine's matrices (widened), keeps its vectors, and rounding twice
    /// changes nothing.
    func testRoundedMatricesAreTheBF16EngineValues() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 61)
        let b16 = try InferenceWeights(model: model, dtype: .bf16)
        let copy = DiT(config: model.config, maxBatch: 1, maxTokens: 16)
        copy.parameters.update(fromContentsOf: model.parameters)
        InferenceWeights.roundMatricesToBF16(copy)
        let once = Array(copy.parameters)
        InferenceWeights.roundMatricesToBF16(copy)
        XCTAssertEqual(once.map(\.bitPattern), Array(copy.parameters).map(\.bitPattern), "not idempotent")
        let f32 = try InferenceWeights(model: copy, dtype: .fp32)
        func widened(_ w: LinearWeight) -> [Float] {
            var out = [Float](repeating: 0, count: w.rows * w.cols)
            out.withUnsafeMutableBufferPointer { o in for r in 0..<w.rows { w.row(r, into: o.baseAddress! + r * w.cols) } }
            return out
        }
        for (x, y) in zip([b16.embed, b16.lin] + b16.blocks.flatMap { [$0.qkv, $0.attnOut, $0.fc, $0.proj] },
                          [f32.embed, f32.lin] + f32.blocks.flatMap { [$0.qkv, $0.attnOut, $0.fc, $0.proj] }) {
            XCTAssertEqual(widened(x).map(\.bitPattern), widened(y).map(\.bitPattern))
        }
        var changed = 0
        for t in model.tensors {
            let a = model.tensor(named: t.name)!, b = copy.tensor(named: t.name)!
            let differs = zip(a, b).contains { $0.bitPattern != $1.bitPattern }
            if differs { changed += 1 }
            if !InferenceWeights.matrixNames(model.config).contains(where: { "backbone." + $0 == t.name }) {
                XCTAssertFalse(differs, "\(t.name) is not a bf16 matrix of the engine but was rounded")
            }
        }
        XCTAssertEqual(changed, 2 + 4 * model.config.nBlocks)
    }

    /// score ppl: bf16 NLL within the tolerance of fp32 (AR exact NLL and the BD3 NELBO with the same draws), the
    /// JSON and the table say bf16, and the numbers are not identical (the rounding ran).
    func testPerplexityBF16WithinTolerance() throws {
        let data = dir + "/test.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(16))
        for algo in [Algorithm.ar, .bd3] {
            var r = TinyRun.request(dir: dir, data: data, valid: nil, algo: algo, steps: 20)
            r.runDir = dir + "/\(algo.rawValue)"
            let (t, _) = try TrainSetup.make(r)
            _ = try t.run(runDir: r.runDir, metrics: nil) { _ in }
            var res: [WeightDType: PerplexityResult] = [:]
            for dtype in WeightDType.allCases {
                let (m, info, d) = try Perplexity.load(checkpoint: r.runDir + "/last.safetensors", data: data, batch: 4)
                var o = PerplexityOptions(); o.batch = 4; o.samples = 2; o.dtype = dtype
                res[dtype] = Perplexity.evaluate(model: m, info: info, data: d, options: o)
            }
            let a = res[.fp32]!, b = res[.bf16]!
            print("score ppl \(algo): fp32 nll \(a.nll), bf16 nll \(b.nll), |Δ| \(abs(a.nll - b.nll))")
            XCTAssertEqual(a.nll, b.nll, accuracy: bf16NLLTolerance, "\(algo)")
            XCTAssertNotEqual(a.nll, b.nll, "\(algo): bf16 gave the fp32 NLL bit for bit")
            XCTAssertEqual(a.tokens, b.tokens)
            for (dtype, x) in res {
                let json = try JSONSerialization.jsonObject(with: Data(x.json.utf8)) as! [String: Any]
                XCTAssertEqual(json["dtype"] as? String, dtype.rawValue)
            }
            XCTAssert(b.table.contains("bf16"), b.table)
            // score merge keeps the dtype of its shards and refuses shards of different dtypes.
            if algo == .ar {
                var shards: [WeightDType: [String]] = [:]
                for dtype in WeightDType.allCases {
                    for i in 0..<2 {
                        let (m, info, d) = try Perplexity.load(checkpoint: r.runDir + "/last.safetensors", data: data, batch: 4)
                        var o = PerplexityOptions(); o.batch = 4; o.dtype = dtype; o.shard = try Shard.parse("\(i)/2")
                        shards[dtype, default: []].append(Perplexity.evaluate(model: m, info: info, data: d, options: o).json)
                    }
                }
                let merged = try ScoreMerge.merge(shards[.bf16]!.enumerated().map { ("s\($0.offset)", $0.element) })
                XCTAssertEqual(merged.dtype, .bf16)
                XCTAssertEqual(merged.nll, b.nll, accuracy: 1e-9)
                XCTAssertThrowsError(try ScoreMerge.merge([("a", shards[.bf16]![0]), ("b", shards[.fp32]![1])])) {
                    XCTAssert("\($0)".contains("dtype"), "\($0)")
                }
            }
        }
    }

    /// score gen: the bf16 scorer (inference engine, bf16 matrices) within the tolerance of the fp32 one per
    /// sample; the JSON says scorer_dtype; a scorer command refuses --dtype.
    func testGenerativeScorerBF16WithinTolerance() throws {
        let model = makeSamplingModel(samplingConfig(causal: true, length: 16), seed: 62)
        let path = try saveCheckpoint(model, blockSize: 1)
        var rng = SplitMix64(seed: 4)
        let records = [5, 16, 30].enumerated().map { i, n in
            TokenRecord(id: UInt64(i), tokens: [21] + (1..<n).map { _ in Int32(rng.next() % 21) }, nfe: 1, stages: ["draft"])
        }
        func stream() throws -> TokenStreamReader {
            let sink = MemorySink()
            let w = try TokenStreamWriter(sink: sink, header: StreamHeader(kind: .samples, vocabSize: 23, tokenizerFingerprint: 0xABCD,
                                                                           special: SpecialTokens(bos: 21, eos: 21, mask: 22, pad: -1)))
            for r in records { try w.write(r) }
            try w.finish()
            return try TokenStreamReader(source: MemorySource(sink.bytes))
        }
        var reports: [WeightDType: GenerativeReport] = [:]
        for dtype in WeightDType.allCases {
            var o = GenerativeOptions(); o.dtype = dtype; o.stride = 5
            reports[dtype] = try GenerativeScoring.run(input: try stream(), scorer: .checkpoint(path), options: o)
        }
        var maxPerToken = 0.0
        for (a, b) in zip(reports[.fp32]!.samples, reports[.bf16]!.samples) {
            XCTAssertEqual(a.tokens, b.tokens)
            XCTAssertGreaterThan(a.tokens, 0)
            XCTAssertEqual(a.nll, b.nll, accuracy: bf16GenNLLTolerance * Double(a.tokens), "sample \(a.id)")
            XCTAssertNotEqual(a.nll, b.nll, "sample \(a.id): bf16 gave the fp32 NLL bit for bit")
            maxPerToken = max(maxPerToken, abs(a.nll - b.nll) / Double(a.tokens))
        }
        print("score gen: max |Δ NLL| per token fp32 vs bf16 scorer \(maxPerToken)")
        // The fp32 scorer of the rounded checkpoint: the same weights as the bf16 engine, only the forward differs.
        InferenceWeights.roundMatricesToBF16(model)
        let rounded = try GenerativeScoring.run(input: try stream(), scorer: .checkpoint(try saveCheckpoint(model, blockSize: 1)),
                                                options: { var o = GenerativeOptions(); o.stride = 5; return o }())
        for (a, b) in zip(rounded.samples, reports[.bf16]!.samples) {
            XCTAssertEqual(a.nll, b.nll, accuracy: 1e-4 * Double(a.tokens), "sample \(a.id): engine path vs model forward")
        }
        for (dtype, rep) in reports {
            let json = try JSONSerialization.jsonObject(with: Data(rep.json(perSample: false).utf8)) as! [String: Any]
            XCTAssertEqual(json["scorer_dtype"] as? String, dtype.rawValue)
        }
        var o = GenerativeOptions(); o.dtype = .bf16
        XCTAssertThrowsError(try o.validate(command: true)) { XCTAssert($0 is UsageError) }
    }
}
