// The shared block (Model/Block.swift) inside DiT.forward gives bit-identical logits to the training forward as it
// was before the block was factored out: `legacyForward` below is that forward, kept verbatim (kernel calls in the
// same order on the same buffers), and must agree bit for bit on every layout, with and without adaLN,
// time conditioning and dropout.
import XCTest
@testable import BlockDiffusion

extension DiT {
    func legacyForward(tokens: UnsafeBufferPointer<Int32>, batch B: Int, layout: AttentionLayout,
                        sigma: UnsafeBufferPointer<Float>?, training: Bool, dropoutSeed: UInt64) -> UnsafeMutableBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0, "batch \(B) must be in 1...\(maxBatch) and divide the token count")
        let T = tokens.count / B
        precondition(T >= 1 && T <= maxTokens, "sequence length \(T) exceeds maxTokens \(maxTokens)")
        let D = config.hiddenSize, V = config.vocabSize, H = config.nHeads, d = config.headDim
        let N = B * T
        switch layout {
        case .blockDiffusion(let bs):
            precondition(T % 2 == 0 && bs >= 1 && (T / 2) % bs == 0, "block diffusion needs T = 2L with L a multiple of the block size")
        case .blockCausal(let bs): precondition(bs >= 1 && T % bs == 0, "the sampling window must hold whole blocks of \(bs)")
        default: break
        }
        for i in 0..<N {
            precondition(tokens[i] >= 0 && Int(tokens[i]) < V, "token \(tokens[i]) outside the vocabulary 0..<\(V)")
            tokenCopy[i] = tokens[i]
        }
        // Rotary positions: BD3's halves share 0..L-1.
        for t in 0..<T {
            if case .blockDiffusion = layout { positions[t] = Int32(t % (T / 2)) } else { positions[t] = Int32(t) }
        }
        if plan == nil || plan!.layout != layout || plan!.T != T { plan = AttentionPlan(layout: layout, T: T) }
        let lout = outputLength(layout: layout, tokensPerSequence: T)
        precondition(lout <= maxOutputTokens, "\(lout) logit rows per sequence exceed maxOutputTokens \(maxOutputTokens)")
        let nCond = config.timeConditioning ? B : 1
        last = (B, T, layout, training, dropoutSeed, nCond, lout)
        let rowsPerCond = config.timeConditioning ? T : N

        embeddingForward(A(aResid[0]), tokenCopy.baseAddress!, P(pEmbed), N, D)

        computeConditioning(batch: B, nCond: nCond, sigma: sigma)

        let p = training ? config.dropout : 0
        for l in 0..<config.nBlocks {
            let s = aBlocks[l], w = pBlocks[l]
            let mod: FloatPtr? = config.hasAdaLN ? A(s.mod) : nil
            let x = A(aResid[l])
            normModulateForward(h: A(s.h1), xhat: A(s.xhat1), rstd: A(s.rstd1), x: x, weight: P(w.norm1),
                shift: mod, scale: mod.map { $0 + D }, modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
            matmulForward(A(s.qkv), A(s.h1), P(w.qkv), nil, N, D, 3 * D)
            rotaryApply(A(s.qkv), positions: positions.baseAddress!, T: T, table: rotary, nHeads: H, N, inverse: false)
            let pl = attentionPlan(l)
            attentionForward(out: A(s.att), lse: A(s.lse), qkv: A(s.qkv), plan: pl, B: B, nHeads: H, headDim: d)
            for seg in tailSegments(l, B: B, T: T, layout: layout) {
                let (r0, n) = (seg.r0, seg.n)
                let (m, rpc) = segmentModulation(mod, seg, rowsPerCond)
                let x = x + r0 * D
                matmulForward(A(s.attProj) + r0 * D, A(s.att) + r0 * D, P(w.attnOut), nil, n, D, D)
                dropoutForward(A(s.attProj) + r0 * D, n * D, Dropout(p: p, seed: dropoutSeed, stream: seg.stream(2 * l)))
                gateResidualForward(out: A(aResid2) + r0 * D, resid: x, branch: A(s.attProj) + r0 * D, gate: m.map { $0 + 2 * D },
                modStride: 6 * D, rowsPerCond: rpc, n, D)
                normModulateForward(h: A(s.h2) + r0 * D, xhat: A(s.xhat2) + r0 * D, rstd: A(s.rstd2) + r0, x: A(aResid2) + r0 * D, weight: P(w.norm2),
                shift: m.map { $0 + 3 * D }, scale: m.map { $0 + 4 * D }, modStride: 6 * D, rowsPerCond: rpc, n, D)
                matmulForward(A(s.fc) + r0 * 4 * D, A(s.h2) + r0 * D, P(w.fc), P(w.fcBias), n, D, 4 * D)
                // fc then holds gelu'(fc): the backward needs only that.
                geluForward(A(s.gelu) + r0 * 4 * D, A(s.fc) + r0 * 4 * D, n * 4 * D,
                derivative: isInference ? nil : A(s.fc) + r0 * 4 * D)
                matmulForward(A(s.fcProj) + r0 * D, A(s.gelu) + r0 * 4 * D, P(w.proj), P(w.projBias), n, 4 * D, D)
                dropoutForward(A(s.fcProj) + r0 * D, n * D, Dropout(p: p, seed: dropoutSeed, stream: seg.stream(2 * l + 1)))
                gateResidualForward(out: A(aResid[l + 1]) + r0 * D, resid: A(aResid2) + r0 * D, branch: A(s.fcProj) + r0 * D,
                gate: m.map { $0 + 5 * D }, modStride: 6 * D, rowsPerCond: rpc, n, D)
            }
        }

        // Output layer on the output rows only.
        let nOut = B * lout
        let xl = A(aResid[config.nBlocks])
        for b in 0..<B {
            let src = xl + (b * T + (T == lout ? 0 : outputRowStart(layout, T: T, lout: lout))) * D
            (A(aXf) + b * lout * D).update(from: src, count: lout * D)
        }
        let modF: FloatPtr? = config.hasAdaLN ? A(aModF) : nil
        normModulateForward(h: A(aHf), xhat: A(aXhatF), rstd: A(aRstdF), x: A(aXf), weight: P(pNormF),
                            shift: modF, scale: modF.map { $0 + D }, modStride: 2 * D,
                            rowsPerCond: config.timeConditioning ? lout : nOut, nOut, D)
        matmulForward(A(aLogits), A(aHf), P(pLin), P(pLinBias), nOut, D, V)
        return UnsafeMutableBufferPointer(start: A(aLogits), count: nOut * V)
    }

}

final class SharedBlockTests: XCTestCase {
    func logits(_ m: DiT, legacy: Bool, tokens: [Int32], B: Int, layout: AttentionLayout, sigma: [Float]?, training: Bool) -> [Float] {
        tokens.withUnsafeBufferPointer { t in
            (sigma ?? []).withUnsafeBufferPointer { s -> [Float] in
                let sg = sigma == nil ? nil : s
                return Array(legacy ? m.legacyForward(tokens: t, batch: B, layout: layout, sigma: sg, training: training, dropoutSeed: 9)
                                    : m.forward(tokens: t, batch: B, layout: layout, sigma: sg, training: training, dropoutSeed: 9))
            }
        }
    }

    func testSharedBlockIsBitIdenticalToTheTrainingForward() {
        let L = 8, B = 2
        var rng = SplitMix64(seed: 4)
        for (causal, timeCond, dropout) in [(false, false, 0.0), (false, true, 0.1), (true, false, 0.0), (false, false, 0.1)] {
            var cfg = ModelConfig(vocabSize: 23, hiddenSize: 32, nBlocks: 2, nHeads: 4, condDim: 16, length: L,
                                  dropout: Float(dropout), causal: causal)
            cfg.timeConditioning = timeCond
            let layouts: [AttentionLayout] = causal ? [.causal] : [.blockDiffusion(blockSize: 4), .blockCausal(blockSize: 4), .full]
            for inference in [false, true] {
                let m = DiT(config: cfg, maxBatch: B, maxTokens: 2 * L, inference: inference)
                m.initialize(seed: 3)
                for i in 0..<m.parameters.count { m.parameters[i] += Float(rng.nextDouble() - 0.5) * 0.3 }
                for layout in layouts {
                    let T: Int
                    if case .blockDiffusion = layout { T = 2 * L } else { T = L }
                    let tokens = (0..<(B * T)).map { _ in Int32(rng.next() % 23) }
                    let sigma: [Float]? = timeCond ? [0.3, 1.7] : nil
                    for training in inference ? [false] : [false, true] {
                        let a = logits(m, legacy: true, tokens: tokens, B: B, layout: layout, sigma: sigma, training: training)
                        let b = logits(m, legacy: false, tokens: tokens, B: B, layout: layout, sigma: sigma, training: training)
                        XCTAssertFalse(a.isEmpty)
                        XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "causal \(causal) timeCond \(timeCond) \(layout) training \(training)")
                    }
                }
            }
        }
    }
}
