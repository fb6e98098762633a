// Per-layer checks of the DiT kernels: finite-difference gradient checks for every layer and
// agreement of each hand-written kernel with its naive twin.
import XCTest
@testable import BlockDiffusion

/// Owned Float buffer for tests.
final class TBuf {
    let p: UnsafeMutablePointer<Float>
    let count: Int
    init(_ n: Int, fill: Float = 0) { count = n; p = .allocate(capacity: max(n, 1)); p.initialize(repeating: fill, count: max(n, 1)) }
    convenience init(random n: Int, _ rng: inout SplitMix64, scale: Float = 1, offset: Float = 0) {
        self.init(n)
        for i in 0..<n { p[i] = offset + scale * Float(rng.nextDouble() * 2 - 1) }
    }
    deinit { p.deallocate() }
    var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
    subscript(i: Int) -> Float { get { p[i] } set { p[i] = newValue } }
    func zero() { p.update(repeating: 0, count: count) }
}

/// Σ w_i out_i in Double.
func weightedSum(_ out: UnsafePointer<Float>, _ w: TBuf) -> Double {
    var s = 0.0
    for i in 0..<w.count { s += Double(out[i]) * Double(w[i]) }
    return s
}

/// Central differences on x[indices] against `analytic`; norm-relative error must be ≤ tol (plus a small
/// absolute floor for float round-off). The analytic gradient must be non-trivial so the check can fail.
func fdCheck(_ label: String, x: UnsafeMutablePointer<Float>, count: Int, analytic: [Float], indices: [Int]? = nil,
             h: Float = 1e-2, tol: Double = 1e-2, atol: Double = 1e-5, requireNonZero: Bool = true,
             loss: () -> Double, file: StaticString = #filePath, line: UInt = #line) {
    let idx = indices ?? Array(0..<count)
    var err2 = 0.0, ref2 = 0.0, worst = 0.0
    for i in idx {
        let old = x[i]
        x[i] = old + h; let lp = loss()
        x[i] = old - h; let lm = loss()
        x[i] = old
        let fd = (lp - lm) / (2 * Double(h))
        let an = Double(analytic[i])
        err2 += (fd - an) * (fd - an); ref2 += an * an
        worst = max(worst, abs(fd - an))
    }
    let err = err2.squareRoot(), ref = ref2.squareRoot()
    if requireNonZero { XCTAssertGreaterThan(ref, 1e-6, "\(label): analytic gradient is zero", file: file, line: line) }
    XCTAssertLessThanOrEqual(err, tol * ref + atol * Double(idx.count).squareRoot(),
                             "\(label): |fd − analytic| = \(err), |analytic| = \(ref), worst \(worst)", file: file, line: line)
}

func sampleIndices(_ count: Int, _ k: Int, _ rng: inout SplitMix64) -> [Int] {
    if count <= k { return Array(0..<count) }
    return (0..<k).map { _ in Int(rng.next() % UInt64(count)) }
}

final class LayerTests: XCTestCase {

    func testMatmulGradients() {
        var rng = SplitMix64(seed: 1)
        let N = 5, C = 7, OC = 6
        let x = TBuf(random: N * C, &rng), w = TBuf(random: OC * C, &rng), b = TBuf(random: OC, &rng)
        let out = TBuf(N * OC), wo = TBuf(random: N * OC, &rng)
        func loss() -> Double { matmulForward(out.p, x.p, w.p, b.p, N, C, OC); return weightedSum(out.p, wo) }
        _ = loss()
        // Forward against a naive product.
        for r in 0..<N { for o in 0..<OC {
            var s = Double(b[o]); for c in 0..<C { s += Double(x[r * C + c]) * Double(w[o * C + c]) }
            XCTAssertEqual(Double(out[r * OC + o]), s, accuracy: 1e-5)
        } }
        let dx = TBuf(N * C), dw = TBuf(OC * C), db = TBuf(OC)
        matmulBackward(dinp: dx.p, dweight: dw.p, dbias: db.p, dout: wo.p, inp: x.p, weight: w.p, N, C, OC)
        fdCheck("matmul dx", x: x.p, count: x.count, analytic: dx.array, loss: loss)
        fdCheck("matmul dw", x: w.p, count: w.count, analytic: dw.array, loss: loss)
        fdCheck("matmul db", x: b.p, count: b.count, analytic: db.array, loss: loss)
    }

    func testEmbeddingForwardAndGradient() {
        var rng = SplitMix64(seed: 2)
        let V = 11, D = 6, N = 9
        let table = TBuf(random: V * D, &rng)
        var tokens: [Int32] = (0..<N).map { _ in Int32(rng.next() % UInt64(V)) }
        tokens[3] = tokens[0]  // a repeated token accumulates
        let out = TBuf(N * D), wo = TBuf(random: N * D, &rng)
        func loss() -> Double { tokens.withUnsafeBufferPointer { embeddingForward(out.p, $0.baseAddress!, table.p, N, D) }; return weightedSum(out.p, wo) }
        _ = loss()
        for r in 0..<N { for j in 0..<D { XCTAssertEqual(out[r * D + j], table[Int(tokens[r]) * D + j]) } }
        let dt = TBuf(V * D)
        tokens.withUnsafeBufferPointer { embeddingBackward(dt.p, wo.p, $0.baseAddress!, N, D) }
        fdCheck("embedding", x: table.p, count: table.count, analytic: dt.array, loss: loss)
    }

    /// LayerNorm + weight + adaLN modulate, for a shared cond row, per-sequence cond rows, and no modulation.
    func testNormModulateAgainstNaiveAndGradients() {
        for (rowsPerCond, modulated) in [(12, true), (4, true), (12, false)] {
            var rng = SplitMix64(seed: 3)
            let N = 12, D = 8, stride = 3 * D
            let nCond = N / rowsPerCond
            let x = TBuf(random: N * D, &rng, scale: 2, offset: 0.3), w = TBuf(random: D, &rng, scale: 0.3, offset: 1)
            let mod = TBuf(random: nCond * stride, &rng, scale: 0.5)
            let h = TBuf(N * D), xhat = TBuf(N * D), rstd = TBuf(N), wo = TBuf(random: N * D, &rng)
            let shift: UnsafeMutablePointer<Float>? = modulated ? mod.p + D : nil
            let scale: UnsafeMutablePointer<Float>? = modulated ? mod.p + 2 * D : nil
            func loss() -> Double {
                normModulateForward(h: h.p, xhat: xhat.p, rstd: rstd.p, x: x.p, weight: w.p, shift: shift, scale: scale,
                                    modStride: stride, rowsPerCond: rowsPerCond, N, D)
                return weightedSum(h.p, wo)
            }
            _ = loss()
            for r in 0..<N {
                let c = r / rowsPerCond
                let ref = naiveNormModulate(Array(x.array[(r * D)..<((r + 1) * D)]), weight: w.array,
                                            shift: modulated ? Array(mod.array[(c * stride + D)..<(c * stride + 2 * D)]) : nil,
                                            scale: modulated ? Array(mod.array[(c * stride + 2 * D)..<(c * stride + 3 * D)]) : nil)
                for j in 0..<D { XCTAssertEqual(h[r * D + j], ref[j], accuracy: 1e-5) }
            }
            let dx = TBuf(N * D), dw = TBuf(D), dmod = TBuf(nCond * stride)
            normModulateBackward(dx: dx.p, dweight: dw.p, dshift: modulated ? dmod.p + D : nil, dscale: modulated ? dmod.p + 2 * D : nil,
                                 dh: wo.p, xhat: xhat.p, rstd: rstd.p, weight: w.p, scale: scale, modStride: stride, rowsPerCond: rowsPerCond, N, D)
            fdCheck("LN dx", x: x.p, count: x.count, analytic: dx.array, h: 1e-3, loss: loss)
            fdCheck("LN dweight", x: w.p, count: w.count, analytic: dw.array, h: 1e-3, loss: loss)
            if modulated {
                fdCheck("adaLN dshift/dscale", x: mod.p, count: mod.count,
                        analytic: dmod.array, h: 1e-3, requireNonZero: true, loss: loss)
                // The unused first chunk of each cond row must get no gradient.
                for c in 0..<nCond { for j in 0..<D { XCTAssertEqual(dmod[c * stride + j], 0) } }
            }
        }
    }

    /// out = resid + gate[c] ∘ dropout(branch), dropout keyed by (seed, stream, index).
    func testGatedResidualWithDropoutGradients() {
        var rng = SplitMix64(seed: 4)
        let N = 10, D = 6, rowsPerCond = 5, stride = 2 * D
        let resid = TBuf(random: N * D, &rng), branch = TBuf(random: N * D, &rng), gates = TBuf(random: 2 * stride, &rng)
        let tmp = TBuf(N * D), out = TBuf(N * D), wo = TBuf(random: N * D, &rng)
        let drop = Dropout(p: 0.3, seed: 99, stream: 7)
        func loss() -> Double {
            tmp.p.update(from: branch.p, count: N * D)
            dropoutForward(tmp.p, N * D, drop)
            gateResidualForward(out: out.p, resid: resid.p, branch: tmp.p, gate: gates.p + D, modStride: stride, rowsPerCond: rowsPerCond, N, D)
            return weightedSum(out.p, wo)
        }
        _ = loss()
        var zeros = 0
        for i in 0..<(N * D) {
            if tmp[i] == 0 { zeros += 1 } else { XCTAssertEqual(tmp[i], branch[i] / 0.7, accuracy: 1e-6) }
        }
        XCTAssertGreaterThan(zeros, 5); XCTAssertLessThan(zeros, 35)
        let db = TBuf(N * D), dg = TBuf(2 * stride)
        gateResidualBackward(dbranch: db.p, dgate: dg.p + D, dout: wo.p, branch: tmp.p, gate: gates.p + D, modStride: stride,
                             rowsPerCond: rowsPerCond, dropout: drop, N, D)
        fdCheck("dropout branch", x: branch.p, count: branch.count, analytic: db.array, loss: loss)
        fdCheck("gate", x: gates.p, count: gates.count, analytic: dg.array, loss: loss)
        fdCheck("resid", x: resid.p, count: resid.count, analytic: wo.array, loss: loss)
        // Different streams give different masks.
        let a = TBuf(100, fill: 1), b = TBuf(100, fill: 1)
        dropoutForward(a.p, 100, Dropout(p: 0.5, seed: 1, stream: 0)); dropoutForward(b.p, 100, Dropout(p: 0.5, seed: 1, stream: 1))
        XCTAssertNotEqual(a.array, b.array)
    }

    func testGeluAgainstNaiveAndGradient() {
        var rng = SplitMix64(seed: 5)
        let n = 64
        let x = TBuf(random: n, &rng, scale: 4), out = TBuf(n), wo = TBuf(random: n, &rng)
        func loss() -> Double { geluForward(out.p, x.p, n); return weightedSum(out.p, wo) }
        _ = loss()
        for i in 0..<n { XCTAssertEqual(out[i], naiveGelu(x[i]), accuracy: 1e-6) }
        let dx = TBuf(n)
        geluBackward(dx.p, x.p, wo.p, n)
        fdCheck("gelu", x: x.p, count: n, analytic: dx.array, h: 1e-3, loss: loss)
        // The derivative stored by the forward (in place of the input, as the model does) gives the same backward.
        let stored = TBuf(n), out2 = TBuf(n), dx2 = TBuf(n)
        _ = loss()   // fdCheck left `out` at a perturbed point
        stored.p.update(from: x.p, count: n)
        geluForward(out2.p, stored.p, n, derivative: stored.p)
        XCTAssertEqual(out2.array, out.array)
        geluBackwardStored(dx2.p, stored.p, wo.p, n)
        for i in 0..<n { XCTAssertEqual(dx2[i], dx[i], accuracy: 1e-6) }
    }

    func testSiluAndTimestepEmbedding() {
        var rng = SplitMix64(seed: 6)
        let n = 20
        let x = TBuf(random: n, &rng, scale: 3), out = TBuf(n), wo = TBuf(random: n, &rng)
        func loss() -> Double { siluForward(out.p, x.p, n); return weightedSum(out.p, wo) }
        _ = loss()
        for i in 0..<n { XCTAssertEqual(Double(out[i]), Double(x[i]) / (1 + exp(-Double(x[i]))), accuracy: 1e-6) }
        let dx = TBuf(n)
        siluBackward(dx.p, x.p, wo.p, n)
        fdCheck("silu", x: x.p, count: n, analytic: dx.array, h: 1e-3, loss: loss)
        for sigma in [0.0, 0.37, 6.9] {
            let e = TBuf(256)
            timestepEmbedding(e.p, Float(sigma))
            let ref = naiveTimestepEmbedding(Double(Float(sigma)))
            for i in 0..<256 { XCTAssertEqual(Double(e[i]), ref[i], accuracy: 2e-6) }
        }
        // sigma = 0: cos part all 1, sin part all 0 (the constant BD3/MDLM conditioning input).
        let z = TBuf(256); timestepEmbedding(z.p, 0)
        XCTAssertEqual(z.array, [Float](repeating: 1, count: 128) + [Float](repeating: 0, count: 128))
    }

    func testRotaryAgainstNaiveAndBackward() {
        var rng = SplitMix64(seed: 7)
        let H = 2, d = 8, D = H * d, T = 6, B = 2, N = B * T
        let table = RotaryTable(headDim: d, maxPositions: T)
        let positions: [Int32] = [0, 1, 2, 0, 1, 2]   // shared positions like the BD3 halves
        let qkv = TBuf(random: N * 3 * D, &rng), x = TBuf(N * 3 * D), wo = TBuf(random: N * 3 * D, &rng)
        func loss() -> Double {
            x.p.update(from: qkv.p, count: x.count)
            positions.withUnsafeBufferPointer { rotaryApply(x.p, positions: $0.baseAddress!, T: T, table: table, nHeads: H, N, inverse: false) }
            return weightedSum(x.p, wo)
        }
        _ = loss()
        for r in 0..<N { for part in 0..<3 { for h in 0..<H {
            let o = r * 3 * D + part * D + h * d
            let v = Array(qkv.array[o..<(o + d)])
            let ref = part == 2 ? v : naiveRotary(v, position: Int(positions[r % T]))
            for j in 0..<d { XCTAssertEqual(x[o + j], ref[j], accuracy: 1e-5) }
        } } }
        let dx = TBuf(N * 3 * D)
        dx.p.update(from: wo.p, count: dx.count)
        positions.withUnsafeBufferPointer { rotaryApply(dx.p, positions: $0.baseAddress!, T: T, table: table, nHeads: H, N, inverse: true) }
        fdCheck("rotary", x: qkv.p, count: qkv.count, analytic: dx.array, loss: loss)
        // inv_freq as torch computes it.
        let inv = RotaryTable.invFreq(headDim: 32)
        XCTAssertEqual(inv.count, 16); XCTAssertEqual(inv[0], 1); XCTAssertEqual(Double(inv[1]), pow(10000, -2.0 / 32), accuracy: 1e-7)
    }

    // MARK: Attention

    /// The spec's printed example (n = 6, L' = 2).
    func testBlockDiffusionMaskMatchesSpecExample() {
        let rows = ["110000000000", "110000000000", "001100110000", "001100110000", "000011111100", "000011111100",
                    "000000110000", "000000110000", "000000111100", "000000111100", "000000111111", "000000111111"]
        for q in 0..<12 {
            let got = (0..<12).map { attentionMaskAllowed(.blockDiffusion(blockSize: 2), T: 12, q: q, k: $0) ? "1" : "0" }.joined()
            XCTAssertEqual(got, rows[q], "row \(q)")
        }
    }

    static let layouts: [(AttentionLayout, Int)] = [
        (.full, 8), (.causal, 9), (.blockDiffusion(blockSize: 2), 16), (.blockDiffusion(blockSize: 4), 16),
        (.blockDiffusion(blockSize: 1), 8), (.blockDiffusion(blockSize: 8), 16), (.blockCausal(blockSize: 3), 8),
    ]

    func testRowIntervalsEqualMaskPredicate() {
        for (layout, T) in LayerTests.layouts {
            for q in 0..<T {
                let iv = rowIntervals(layout, T: T, q: q)
                for k in 0..<T {
                    let inIv = (k >= iv.0 && k < iv.1) || (k >= iv.2 && k < iv.3)
                    XCTAssertEqual(inIv, attentionMaskAllowed(layout, T: T, q: q, k: k), "\(layout) q=\(q) k=\(k)")
                }
            }
            // Every plan covers every allowed key of every row.
            for tileRows in [64, 4, 1] {
                let plan = AttentionPlan(layout: layout, T: T, tileRows: tileRows)
                var covered = 0
                for tile in plan.tiles {
                    covered += tile.q1 - tile.q0
                    for q in tile.q0..<tile.q1 { for k in 0..<T where attentionMaskAllowed(layout, T: T, q: q, k: k) {
                        XCTAssertTrue(tile.spans.contains { k >= $0.0 && k < $0.1 }, "\(layout) tile misses q=\(q) k=\(k)")
                    } }
                }
                XCTAssertEqual(covered, T)
            }
        }
        // Fully masked tiles are skipped: BD3 with small blocks computes well under the dense (2L)².
        let plan = AttentionPlan(layout: .blockDiffusion(blockSize: 4), T: 512, tileRows: 64)
        XCTAssertLessThan(plan.computedFraction, 0.4)
        XCTAssertLessThan(AttentionPlan(layout: .causal, T: 512, tileRows: 64).computedFraction, 0.6)
    }

    func testTiledAttentionMatchesNaiveAndGradient() {
        for (layout, T) in LayerTests.layouts {
            for tileRows in [64, 4] {
                var rng = SplitMix64(seed: 8)
                let B = 2, H = 2, d = 4, D = H * d
                let qkv = TBuf(random: B * T * 3 * D, &rng, scale: 1.5), out = TBuf(B * T * D), lse = TBuf(B * H * T)
                let ref = TBuf(B * T * D), wo = TBuf(random: B * T * D, &rng)
                let plan = AttentionPlan(layout: layout, T: T, tileRows: tileRows)
                func loss() -> Double {
                    attentionForward(out: out.p, lse: lse.p, qkv: qkv.p, plan: plan, B: B, nHeads: H, headDim: d)
                    return weightedSum(out.p, wo)
                }
                _ = loss()
                naiveAttentionForward(out: ref.p, qkv: qkv.p, layout: layout, B: B, T: T, nHeads: H, headDim: d)
                for i in 0..<out.count { XCTAssertEqual(out[i], ref[i], accuracy: 1e-5, "\(layout) fwd") }
                let dq = TBuf(qkv.count), dqRef = TBuf(qkv.count)
                attentionBackward(dqkv: dq.p, dout: wo.p, out: out.p, lse: lse.p, qkv: qkv.p, plan: plan, B: B, nHeads: H, headDim: d)
                naiveAttentionBackward(dqkv: dqRef.p, dout: wo.p, qkv: qkv.p, layout: layout, B: B, T: T, nHeads: H, headDim: d)
                for i in 0..<dq.count { XCTAssertEqual(dq[i], dqRef[i], accuracy: 1e-4, "\(layout) bwd") }
                if tileRows == 4 {
                    fdCheck("attention \(layout)", x: qkv.p, count: qkv.count, analytic: dq.array, h: 1e-3, tol: 1e-2, loss: loss)
                }
            }
        }
    }

    // MARK: SIMD fast math (release default; forced on here so debug runs check it too)

    func testFastMathSIMDAgainstScalarTwins() {
        let saved = fastMathSIMD
        fastMathSIMD = true
        defer { fastMathSIMD = saved }
        var rng = SplitMix64(seed: 30)
        let n = 203   // not a multiple of 8: exercises the scalar tail
        let x = TBuf(random: n, &rng, scale: 60, offset: -30)     // softmax use: arguments ≤ 0 after the shift
        x[0] = -.infinity; x[1] = 31.5; x[2] = -87; x[3] = 0
        let e = TBuf(n); e.p.update(from: x.p, count: n)
        let shift: Float = 31.5
        let sum = expShiftSum(e.p, n, shift)
        var ref = 0.0
        for i in 0..<n {
            let r = exp(Double(x[i] - shift))   // same float argument as the kernel
            ref += r
            if r > 1e-30 { XCTAssertEqual(Double(e[i]), r, accuracy: 3e-7 * r, "exp(\(x[i]))") } else { XCTAssertLessThan(e[i], 1e-30) }
        }
        XCTAssertEqual(Double(sum), ref, accuracy: 1e-6 * ref)
        XCTAssertEqual(maxOf(x.p, n), x.array.max()!)
        let y = TBuf(random: n, &rng); let yc = y.array
        scaleInPlace(y.p, n, 0.25)
        for i in 0..<n { XCTAssertEqual(y[i], yc[i] * 0.25) }
        // GELU and its stored derivative through the SIMD path vs the naive twin and the scalar backward.
        let g = TBuf(random: n, &rng, scale: 6), out = TBuf(n), der = TBuf(n), dref = TBuf(n), ones = TBuf(n, fill: 1)
        geluForward(out.p, g.p, n, derivative: der.p)
        fastMathSIMD = false
        geluBackward(dref.p, g.p, ones.p, n)
        for i in 0..<n {
            XCTAssertEqual(out[i], naiveGelu(g[i]), accuracy: 2e-6 * max(1, abs(out[i])))
            XCTAssertEqual(der[i], dref[i], accuracy: 2e-6)
        }
    }

    // MARK: Loss heads

    func testSubsLossAgainstNaiveKnownValueAndGradient() {
        var rng = SplitMix64(seed: 9)
        let N = 6, V = 13, m: Int32 = 12
        let logits = TBuf(random: N * V, &rng, scale: 3)
        let x0: [Int32] = [3, 5, 0, 11, 7, 2]
        let xt: [Int32] = [m, 5, m, m, 7, m]
        let weights = TBuf(random: N, &rng, scale: 0.5, offset: 1.5)
        let loss = TBuf(N), dl = TBuf(N * V), lp = TBuf(V)
        func total() -> Double {
            LossHeads.subs(logits: logits.p, N: N, V: V, xt: xt, x0: x0, maskId: m, weights: weights.p, loss: loss.p, dLogits: nil)
        }
        let t = LossHeads.subs(logits: logits.p, N: N, V: V, xt: xt, x0: x0, maskId: m, weights: weights.p, loss: loss.p, dLogits: dl.p)
        var refTotal = 0.0
        for r in 0..<N {
            let ref = naiveSubsLogProbs(Array(logits.array[(r * V)..<((r + 1) * V)]), xt: Int(xt[r]), mask: Int(m))
            LossHeads.subsLogProbs(logits.p + r * V, V: V, xt: xt[r], maskId: m, out: lp.p)
            for j in 0..<V { XCTAssertEqual(Double(lp[j]), ref[j], accuracy: max(1e-4, 1e-7 * abs(ref[j]))) }  // −1e6 entries: float spacing
            XCTAssertEqual(Double(loss[r]), -Double(weights[r]) * ref[Int(x0[r])], accuracy: 1e-4)
            refTotal += -Double(weights[r]) * ref[Int(x0[r])]
            if xt[r] != m { XCTAssertEqual(loss[r], 0); XCTAssertEqual(lp[Int(xt[r])], 0); XCTAssertEqual(lp[0 == Int(xt[r]) ? 1 : 0], -1e6) }
        }
        XCTAssertEqual(t, refTotal, accuracy: 1e-4)
        fdCheck("subs dlogits", x: logits.p, count: logits.count, analytic: dl.array, h: 1e-3, loss: total)
        // Mask column gets no gradient; unmasked rows none at all.
        for r in 0..<N { XCTAssertEqual(dl[r * V + Int(m)], 0, accuracy: 1e-12) }
        for j in 0..<V { XCTAssertEqual(dl[1 * V + j], 0) }
        // Known value: zero logits → per masked token −log p = ln(V − 1).
        let zero = TBuf(N * V), ones = TBuf(N, fill: 1)
        LossHeads.subs(logits: zero.p, N: N, V: V, xt: xt, x0: x0, maskId: m, weights: ones.p, loss: loss.p, dLogits: nil)
        for r in 0..<N where xt[r] == m { XCTAssertEqual(Double(loss[r]), log(Double(V - 1)), accuracy: 1e-5) }
    }

    func testARLossAgainstNaiveAndGradient() {
        var rng = SplitMix64(seed: 10)
        let N = 5, V = 9, m: Int32 = 8
        let logits = TBuf(random: N * V, &rng, scale: 3)
        let targets: [Int32] = [1, 0, 7, 3, 3]
        let weights = TBuf(random: N, &rng, scale: 0.2, offset: 1)
        let loss = TBuf(N), dl = TBuf(N * V)
        func total() -> Double {
            LossHeads.autoregressive(logits: logits.p, N: N, V: V, targets: targets, maskId: m, weights: weights.p, loss: loss.p, dLogits: nil)
        }
        _ = LossHeads.autoregressive(logits: logits.p, N: N, V: V, targets: targets, maskId: m, weights: weights.p, loss: loss.p, dLogits: dl.p)
        for r in 0..<N {
            let ref = naiveARLogProbs(Array(logits.array[(r * V)..<((r + 1) * V)]), mask: Int(m))
            XCTAssertEqual(Double(loss[r]), -Double(weights[r]) * ref[Int(targets[r])], accuracy: 1e-4)
        }
        fdCheck("ar dlogits", x: logits.p, count: logits.count, analytic: dl.array, h: 1e-3, loss: total)
    }
}
