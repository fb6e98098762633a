// Whole-model checks on a tiny DiT (D=32, H=4, 2 blocks, L=8, V=23): finite-difference gradients of
// every parameter tensor for BD3, MDLM, AR, SEDD-style time conditioning and the sampling window; the
// ln(V−1) known value at init; equivalence of the sampling window with the BD3 training layout.
import XCTest
@testable import BlockDiffusion

func tinyConfig(causal: Bool = false, time: Bool = false, dropout: Float = 0) -> ModelConfig {
    ModelConfig(vocabSize: 23, hiddenSize: 32, nBlocks: 2, nHeads: 4, condDim: 16, length: 8,
                dropout: dropout, causal: causal, timeConditioning: time)
}

/// Every tensor random and non-zero (adaLN and output included): U(±1.5/√fan_in), LN weights 1 ± 0.2.
func randomizeAll(_ model: DiT, seed: UInt64) {
    var rng = SplitMix64(seed: seed)
    for t in model.tensors {
        let p = model.parameters.baseAddress! + t.offset
        let isNorm = t.name.hasSuffix("norm1.weight") || t.name.hasSuffix("norm2.weight") || t.name.hasSuffix("norm_final.weight")
        var fanIn = 1
        if t.shape.count == 2 { fanIn = t.shape[1] }
        else if t.name.hasSuffix(".bias"), let w = model.tensors.first(where: { $0.name == t.name.replacingOccurrences(of: ".bias", with: ".weight") }) { fanIn = w.shape[1] }
        let bound = isNorm ? 0.2 : 1.5 / Double(fanIn).squareRoot()
        for i in 0..<t.count { p[i] = (isNorm ? 1 : 0) + Float((rng.nextDouble() * 2 - 1) * bound) }
    }
}

final class ModelTests: XCTestCase {
    let V = 23, mask: Int32 = 22, L = 8, B = 2

    struct Case {
        var tokens: [Int32]       // model input (B, T)
        var xt: [Int32]           // per output row: the noisy token (SUBS) — unused for AR
        var target: [Int32]       // per output row: x0 (SUBS) or next token (AR)
        var weights: [Float]      // per output row
        var sigma: [Float]?
        var layout: AttentionLayout
        var ar: Bool
    }

    func makeCase(_ layout: AttentionLayout, ar: Bool = false, time: Bool = false, seed: UInt64) -> Case {
        var rng = SplitMix64(seed: seed)
        let x0 = (0..<(B * L)).map { _ in Int32(rng.next() % UInt64(V - 1)) }
        var xt = x0
        for i in 0..<xt.count where rng.nextDouble() < 0.6 { xt[i] = mask }
        xt[0] = mask; xt[1] = x0[1]   // at least one of each kind
        let w = (0..<(B * L)).map { _ in Float(1 + 2 * rng.nextDouble()) / Float(B * L) }
        switch layout {
        case .blockDiffusion:
            var tok: [Int32] = []
            for b in 0..<B {
                let lo = b * L, hi = (b + 1) * L
                tok.append(contentsOf: xt[lo..<hi]); tok.append(contentsOf: x0[lo..<hi])
            }
            return Case(tokens: tok, xt: xt, target: x0, weights: w, sigma: nil, layout: layout, ar: false)
        case .blockCausal(let bs):
            // Window: clean tokens then the noisy last block; logits for the last block only.
            var tok = x0, xo: [Int32] = [], to: [Int32] = [], wo: [Float] = []
            for b in 0..<B {
                for i in (L - bs)..<L { tok[b * L + i] = xt[b * L + i]; xo.append(xt[b * L + i]); to.append(x0[b * L + i]); wo.append(w[b * L + i]) }
            }
            return Case(tokens: tok, xt: xo, target: to, weights: wo, sigma: nil, layout: layout, ar: false)
        default:
            let sig: [Float]? = time ? [0.3, 1.7] : nil
            if ar {
                let targets = (0..<(B * L)).map { _ in Int32(rng.next() % UInt64(V - 1)) }
                return Case(tokens: x0, xt: x0, target: targets, weights: w, sigma: nil, layout: layout, ar: true)
            }
            return Case(tokens: xt, xt: xt, target: x0, weights: w, sigma: sig, layout: layout, ar: false)
        }
    }

    /// Forward + loss head; optionally backward. Returns the summed weighted loss.
    @discardableResult
    func run(_ model: DiT, _ c: Case, training: Bool = false, backward: Bool = false) -> Double {
        let logits = c.tokens.withUnsafeBufferPointer { tok in
            c.sigma.map { s in s.withUnsafeBufferPointer { model.forward(tokens: tok, batch: B, layout: c.layout, sigma: $0, training: training, dropoutSeed: 5) } }
            ?? model.forward(tokens: tok, batch: B, layout: c.layout, sigma: nil, training: training, dropoutSeed: 5)
        }
        let N = c.target.count
        var loss = [Float](repeating: 0, count: N)
        var dl = [Float](repeating: 0, count: backward ? N * V : 0)
        let total: Double = dl.withUnsafeMutableBufferPointer { dlp in
            c.ar
            ? LossHeads.autoregressive(logits: logits.baseAddress!, N: N, V: V, targets: c.target, maskId: mask, weights: c.weights, loss: &loss, dLogits: backward ? dlp.baseAddress! : nil)
            : LossHeads.subs(logits: logits.baseAddress!, N: N, V: V, xt: c.xt, x0: c.target, maskId: mask, weights: c.weights, loss: &loss, dLogits: backward ? dlp.baseAddress! : nil)
        }
        if backward {
            model.zeroGradients()
            dl.withUnsafeBufferPointer { model.backward(dLogits: $0) }
        }
        return total
    }

    func gradientCheck(_ config: ModelConfig, _ c: Case, training: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        // BD3 needs only L logit rows per sequence: exercise the smaller logits buffer.
        let model = DiT(config: config, maxBatch: B, maxTokens: 2 * L, maxOutputTokens: L)
        randomizeAll(model, seed: 11)
        run(model, c, training: training, backward: true)
        let grads = Array(model.gradients)
        var rng = SplitMix64(seed: 12)
        let used = Set(c.tokens)
        for t in model.tensors {
            var idx: [Int]
            if t.name.hasSuffix("vocab_embed.embedding") {
                idx = []
                for tok in used.sorted().prefix(4) {
                    for _ in 0..<3 { idx.append(Int(tok) * config.hiddenSize + Int(rng.next() % UInt64(config.hiddenSize))) }
                }
            } else {
                idx = sampleIndices(t.count, 8, &rng)
            }
            let an = idx.map { grads[t.offset + $0] }
            var full = [Float](repeating: 0, count: t.count)
            for (k, i) in idx.enumerated() { full[i] = an[k] }
            fdCheck("\(c.layout) \(t.name)", x: model.parameters.baseAddress! + t.offset, count: t.count, analytic: full, indices: idx,
                    h: 5e-3, tol: 3e-2, atol: 1e-4, loss: { self.run(model, c, training: training) }, file: file, line: line)
        }
    }

    func testGradientBD3WithDropout() {
        gradientCheck(tinyConfig(dropout: 0.1), makeCase(.blockDiffusion(blockSize: 2), seed: 1), training: true)
    }
    func testGradientBD3Eval() {
        gradientCheck(tinyConfig(), makeCase(.blockDiffusion(blockSize: 4), seed: 2))
    }
    func testGradientMDLM() {
        gradientCheck(tinyConfig(), makeCase(.full, seed: 3))
    }
    func testGradientAR() {
        gradientCheck(tinyConfig(causal: true, dropout: 0.1), makeCase(.causal, ar: true, seed: 4), training: true)
    }
    func testGradientTimeConditioned() {
        gradientCheck(tinyConfig(time: true), makeCase(.full, time: true, seed: 5))
    }
    func testGradientSamplingWindow() {
        gradientCheck(tinyConfig(), makeCase(.blockCausal(blockSize: 2), seed: 6))
    }

    func testParameterNamesAndShapes() {
        let m = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 2)
        let names = m.tensors.map(\.name)
        XCTAssertEqual(Array(names.prefix(6)), ["backbone.vocab_embed.embedding", "backbone.sigma_map.mlp.0.weight", "backbone.sigma_map.mlp.0.bias",
                                                "backbone.sigma_map.mlp.2.weight", "backbone.sigma_map.mlp.2.bias", "backbone.blocks.0.norm1.weight"])
        let shapes = Dictionary(uniqueKeysWithValues: m.tensors.map { ($0.name, $0.shape) })
        XCTAssertEqual(shapes["backbone.blocks.1.attn_qkv.weight"], [96, 32])
        XCTAssertEqual(shapes["backbone.blocks.1.adaLN_modulation.weight"], [192, 16])
        XCTAssertEqual(shapes["backbone.output_layer.adaLN_modulation.weight"], [64, 16])
        XCTAssertEqual(shapes["backbone.output_layer.linear.weight"], [23, 32])
        XCTAssertEqual(shapes["backbone.sigma_map.mlp.0.weight"], [16, 256])
        // Offsets tile the flat buffer.
        var off = 0
        for t in m.tensors { XCTAssertEqual(t.offset, off); off += t.count }
        XCTAssertEqual(off, m.parameterCount)
        // AR has neither sigma_map nor adaLN.
        let ar = DiT(config: tinyConfig(causal: true), maxBatch: 1, maxTokens: 2)
        XCTAssertFalse(ar.tensors.contains { $0.name.contains("sigma_map") || $0.name.contains("adaLN") })
        // Reference count for `tiny` with V = 50258 (spec §1.5): 32,941,010.
        let c = ModelConfig.named("tiny", vocabSize: 50258)!
        var count = c.vocabSize * 256 + (64 * 256 + 64 + 64 * 64 + 64)
        count += 8 * (256 + 768 * 256 + 256 * 256 + 256 + 1024 * 256 + 1024 + 256 * 1024 + 256 + 1536 * 64 + 1536)
        count += 256 + 50258 * 256 + 50258 + 512 * 64 + 512
        XCTAssertEqual(count, 32_941_010)
        // The real table at that size (≈ 130 MB of parameters, no gradients, freed at the end of the test).
        XCTAssertEqual(DiT(config: c, maxBatch: 1, maxTokens: 2, inference: true).parameterCount, 32_941_010)
        var arSmall = ModelConfig.named("small", vocabSize: 50258)!
        arSmall.causal = true
        // AR small: 162,246,482 (spec §1.5), computed from the shapes without allocating the model.
        let D = 768
        let arCount = 50258 * D + 12 * (D + 3 * D * D + D * D + D + 4 * D * D + 4 * D + 4 * D * D + D) + D + 50258 * D + 50258
        XCTAssertEqual(arCount, 162_246_482)
        XCTAssertFalse(arSmall.hasAdaLN)
        XCTAssertEqual(ModelConfig.named("small", vocabSize: 5)?.hiddenSize, 768)
        XCTAssertEqual(ModelConfig.named("cpu", vocabSize: 5)?.length, 256)
        XCTAssertNil(ModelConfig.named("huge", vocabSize: 5))
        // JSON: sizes required, flags optional.
        let json = #"{"vocabSize":9,"hiddenSize":16,"nBlocks":1,"nHeads":2,"condDim":4,"length":8,"causal":true}"#
        let cfg = try! JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8))
        XCTAssertEqual(cfg, ModelConfig(vocabSize: 9, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 4, length: 8, dropout: 0.1, causal: true))
        XCTAssertThrowsError(try JSONDecoder().decode(ModelConfig.self, from: Data(#"{"vocabSize":9}"#.utf8)))
        XCTAssertThrowsError(try ModelConfig(vocabSize: 9, hiddenSize: 15, nBlocks: 1, nHeads: 2, condDim: 4, length: 8).validate())
    }

    func testInitIsDeterministicZeroLogitsAndLnVMinus1() {
        let a = DiT(config: tinyConfig(), maxBatch: B, maxTokens: 2 * L), b = DiT(config: tinyConfig(), maxBatch: B, maxTokens: 2 * L)
        a.initialize(seed: 42); b.initialize(seed: 42)
        XCTAssertEqual(Array(a.parameters), Array(b.parameters))
        b.initialize(seed: 43)
        XCTAssertNotEqual(Array(a.parameters), Array(b.parameters))
        for t in a.tensors {
            let v = Array(a.parameters[t.offset..<(t.offset + t.count)])
            if t.name.contains("adaLN") || t.name.contains("output_layer.linear") { XCTAssertTrue(v.allSatisfy { $0 == 0 }, t.name) }
            else if t.name.hasSuffix("norm1.weight") || t.name.hasSuffix("norm2.weight") || t.name.hasSuffix("norm_final.weight") { XCTAssertTrue(v.allSatisfy { $0 == 1 }, t.name) }
            else {
                let fanIn = t.shape.count == 2 ? t.shape[1] : (t.name.contains("mlp.0.bias") ? (t.name.contains("sigma") ? 256 : 32) : (t.name.contains("sigma") ? 16 : 128))
                let bound = Float(1 / Double(fanIn).squareRoot())
                XCTAssertTrue(v.allSatisfy { abs($0) <= bound }, t.name)
                XCTAssertGreaterThan(v.map { abs($0) }.max()!, bound * 0.8, t.name)
            }
        }
        let c = makeCase(.blockDiffusion(blockSize: 2), seed: 7)
        let logits = c.tokens.withUnsafeBufferPointer { a.forward(tokens: $0, batch: B, layout: c.layout, sigma: nil, training: true, dropoutSeed: 1) }
        XCTAssertEqual(logits.count, B * L * V)
        XCTAssertTrue(logits.allSatisfy { $0 == 0 })
        var loss = [Float](repeating: 0, count: B * L)
        let ones = [Float](repeating: 1, count: B * L)
        LossHeads.subs(logits: logits.baseAddress!, N: B * L, V: V, xt: c.xt, x0: c.target, maskId: mask, weights: ones, loss: &loss, dLogits: nil)
        for i in 0..<(B * L) {
            if c.xt[i] == mask { XCTAssertEqual(Double(loss[i]), log(Double(V - 1)), accuracy: 1e-6) } else { XCTAssertEqual(loss[i], 0) }
        }
    }

    /// Spec §11.5: the sampling window [clean blocks, noisy block] equals the BD3 training logits of that block.
    func testSamplingWindowEqualsBlockDiffusionRows() {
        let model = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 2 * L)
        randomizeAll(model, seed: 13)
        var rng = SplitMix64(seed: 14)
        let bs = 2
        let x0 = (0..<L).map { _ in Int32(rng.next() % UInt64(V - 1)) }
        var xt = (0..<L).map { _ in rng.nextDouble() < 0.5 ? mask : Int32(rng.next() % UInt64(V - 1)) }
        for j in 0..<(L / bs) {
            xt[j * bs] = mask
            let bd = (xt + x0).withUnsafeBufferPointer { Array(model.forward(tokens: $0, batch: 1, layout: .blockDiffusion(blockSize: bs), sigma: nil, training: false, dropoutSeed: 0)) }
            let window = Array(x0[0..<(j * bs)]) + Array(xt[(j * bs)..<((j + 1) * bs)])
            let w = window.withUnsafeBufferPointer { Array(model.forward(tokens: $0, batch: 1, layout: .blockCausal(blockSize: bs), sigma: nil, training: false, dropoutSeed: 0)) }
            XCTAssertEqual(w.count, bs * V)
            for i in 0..<(bs * V) { XCTAssertEqual(w[i], bd[j * bs * V + i], accuracy: 2e-5, "block \(j)") }
        }
    }

    /// AR: logits at position i do not depend on later tokens; time conditioning off ignores sigma.
    func testCausalityAndSigmaIgnoredWithoutTimeConditioning() {
        let ar = DiT(config: tinyConfig(causal: true), maxBatch: 1, maxTokens: L)
        randomizeAll(ar, seed: 15)
        var tok: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8]
        let a = tok.withUnsafeBufferPointer { Array(ar.forward(tokens: $0, batch: 1, layout: .causal, sigma: nil, training: false, dropoutSeed: 0)) }
        tok[5] = 20
        let b = tok.withUnsafeBufferPointer { Array(ar.forward(tokens: $0, batch: 1, layout: .causal, sigma: nil, training: false, dropoutSeed: 0)) }
        XCTAssertEqual(Array(a[0..<(5 * V)]), Array(b[0..<(5 * V)]))
        XCTAssertNotEqual(Array(a[(5 * V)...]), Array(b[(5 * V)...]))

        let m = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: L)
        randomizeAll(m, seed: 16)
        let s1: [Float] = [0], s2: [Float] = [3]
        let x = s1.withUnsafeBufferPointer { s in tok.withUnsafeBufferPointer { Array(m.forward(tokens: $0, batch: 1, layout: .full, sigma: s, training: false, dropoutSeed: 0)) } }
        let y = s2.withUnsafeBufferPointer { s in tok.withUnsafeBufferPointer { Array(m.forward(tokens: $0, batch: 1, layout: .full, sigma: s, training: false, dropoutSeed: 0)) } }
        XCTAssertEqual(x, y)
        let mt = DiT(config: tinyConfig(time: true), maxBatch: 1, maxTokens: L)
        randomizeAll(mt, seed: 16)
        let u = s1.withUnsafeBufferPointer { s in tok.withUnsafeBufferPointer { Array(mt.forward(tokens: $0, batch: 1, layout: .full, sigma: s, training: false, dropoutSeed: 0)) } }
        let v = s2.withUnsafeBufferPointer { s in tok.withUnsafeBufferPointer { Array(mt.forward(tokens: $0, batch: 1, layout: .full, sigma: s, training: false, dropoutSeed: 0)) } }
        XCTAssertEqual(u, x)      // sigma = 0 is the shared constant conditioning
        XCTAssertNotEqual(u, v)
    }

    // MARK: Inference-only models

    /// logits of `m` for one forward (copied out of the activation buffer).
    func logits(_ m: DiT, _ tokens: [Int32], batch: Int, layout: AttentionLayout, sigma: [Float]? = nil) -> [Float] {
        tokens.withUnsafeBufferPointer { t in
            if let sigma { return sigma.withUnsafeBufferPointer { Array(m.forward(tokens: t, batch: batch, layout: layout, sigma: $0, training: false, dropoutSeed: 0)) } }
            return Array(m.forward(tokens: t, batch: batch, layout: layout, sigma: nil, training: false, dropoutSeed: 0))
        }
    }

    /// An inference model (own weights or shared) gives the training model's logits bit for bit, in every layout and
    /// in any order of calls (its blocks share one set of activations), and allocates no gradients.
    func testInferenceModelLogitsBitIdenticalAndNoGradients() {
        for (config, layouts) in [(tinyConfig(), [AttentionLayout.blockDiffusion(blockSize: 2), .full, .blockCausal(blockSize: 4), .blockDiffusion(blockSize: 8)]),
                                  (tinyConfig(time: true), [.full]), (tinyConfig(causal: true), [.causal])] {
            let train = DiT(config: config, maxBatch: B, maxTokens: 2 * L)
            randomizeAll(train, seed: 21)
            let own = DiT(config: config, maxBatch: B, maxTokens: 2 * L, inference: true)
            own.parameters.update(fromContentsOf: train.parameters)
            let shared = DiT(sharingWeightsOf: train, maxBatch: B, maxTokens: 2 * L)
            XCTAssertEqual(shared.parameters.baseAddress, train.parameters.baseAddress, "shared weights are not copied")
            var rng = SplitMix64(seed: 22)
            for layout in layouts {
                let T: Int
                if case .blockDiffusion = layout { T = 2 * L } else { T = L }
                let tokens = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(V)) }
                let sigma: [Float]? = config.timeConditioning ? [0.3, 2.5] : nil
                let ref = logits(train, tokens, batch: B, layout: layout, sigma: sigma)
                XCTAssertTrue(ref.contains { $0 != 0 })
                XCTAssertEqual(logits(own, tokens, batch: B, layout: layout, sigma: sigma), ref, "\(layout)")
                XCTAssertEqual(logits(shared, tokens, batch: B, layout: layout, sigma: sigma), ref, "\(layout)")
                // Block outputs too (the BD3 last block: its x_t half only).
                for l in 0..<(config.nBlocks - 1) { XCTAssertEqual(Array(own.blockOutput(l)), Array(train.blockOutput(l))) }
            }
            XCTAssertFalse(train.isInference)
            XCTAssertTrue(own.isInference && shared.isInference)
            XCTAssertEqual(train.gradients.count, train.parameterCount)
            XCTAssertEqual(own.gradients.count, 0)
            XCTAssertEqual(shared.gradients.count, 0)
            XCTAssertNil(own.gradient(named: "backbone.vocab_embed.embedding"))
            XCTAssertNotNil(train.gradient(named: "backbone.vocab_embed.embedding"))
            // No backward scratch and one set of per-block activations: less than the training buffer.
            XCTAssertLessThan(own.activationCount, train.activationCount)
            let floats = MemoryLayout<Float>.stride
            XCTAssertEqual(train.memoryBytes, floats * (2 * train.parameterCount + train.activationCount))
            XCTAssertEqual(own.memoryBytes, floats * (own.parameterCount + own.activationCount))
            XCTAssertEqual(shared.memoryBytes, floats * shared.activationCount)
        }
    }

    /// The tools' loaders build forward-only models: sampling checkpoints, `score ppl`, WindowDiT (shared weights).
    func testLoadersBuildInferenceModels() throws {
        let m = makeSamplingModel(samplingConfig(), seed: 5)
        let ck = try loadCheckpoint(m, blockSize: 4)
        XCTAssertTrue(ck.model.isInference)
        XCTAssertEqual(ck.model.gradients.count, 0)
        XCTAssertEqual(Array(ck.model.parameters), Array(m.parameters))
        let window = try WindowDiT(model: ck.model, maxBatch: 2, maxChunk: 4, capacity: 8)
        XCTAssertTrue(window.model.isInference)
        XCTAssertEqual(window.model.parameters.baseAddress, ck.model.parameters.baseAddress)
        XCTAssertEqual(window.model.memoryBytes, MemoryLayout<Float>.stride * window.model.activationCount)
    }
}

