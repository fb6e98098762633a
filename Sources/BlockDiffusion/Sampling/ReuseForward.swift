// Approximate K/V reuse inside the current chunk (refine --approx-cache K; the dKV-Cache / d²Cache idea). Off by
// default: nothing here runs unless the option is given.
//
// In a block that is being denoised nothing can be cached exactly: every position attends to every other, so a
// token written at step s changes the keys/values of every position from layer 1 on. The exact sampler therefore
// runs the whole chunk through every layer at every step. This forward recomputes only some rows of the chunk:
//
//   forwardReusing(tokens (B, n), compute = flat rows b·n+i, rows = output rows ⊆ compute):
//     x = E[tokens of compute] ; per block l:
//       qkv = block input of the computed rows ; q, k rotated at window positions cached+i ;
//       k, v of the computed rows → their slots of the chunk in the cache (the other slots keep what the last
//       forward over them wrote: the last full forward, or the last time that row was computed) ;
//       a = softmax(q Kᵀ/√d) V over all cached+n slots of the row's sequence (non-causal) ; block output
//   logits of `rows` only.
//   The chunk's slots must have been written by a full forward of this chunk at the same `cached` (store = false):
//   BlockSampler runs one at the start of every block and then every K forwards of a canvas (the refresh).
//
// Cost: the computed rows' projections + MLP (∝ |compute|) and their attention over the window (∝ |compute|·S),
// instead of ∝ n and n·S. Which rows the sampler computes (BlockSampler.stepForward): the masked ones and the ones
// whose token changed since the canvas's previous forward (dKV-Cache-Decode's one-step-delayed caching: a just
// decoded token's k/v is recomputed once with its real token, then reused).
// Computing every row of a chunk gives exactly the exact forward's numbers (the products, norms and attention are
// row-independent), which is what makes K = 1 identical to the exact sampler and the refresh batch-independent.
//
// Public API:
//   CachedDiT.forwardReusing(tokens:batch:compute:rows:) -> UnsafeBufferPointer<Float>   (rows.count, V)
//   naiveForwardReusing(weights:kCache:vCache:capacity:cached:tokens:batch:compute:rows:)   its naive twin (tests)
import Foundation
import CKernels

extension CachedDiT {
    /// Recomputes the flat rows `compute` (ascending) of the chunk `tokens` (B, n) over the cache's current slots;
    /// returns the logits of `rows` (each in `compute`), in the order given. A view valid until the next call.
    public func forwardReusing(tokens: [Int32], batch B: Int, compute: [Int], rows: [Int]) -> UnsafeBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0)
        let n = tokens.count / B
        precondition(n >= 1 && n <= maxChunk && cached + n <= capacity, "chunk of \(n) tokens does not fit the window")
        precondition(zip(compute, compute.dropFirst()).allSatisfy { $0 < $1 } && compute.allSatisfy { $0 >= 0 && $0 < B * n },
                     "computed rows must be ascending flat rows of the chunk")
        let index = Dictionary(uniqueKeysWithValues: compute.enumerated().map { ($1, $0) })
        let outRows = rows.map { r -> Int in
            guard let k = index[r] else { preconditionFailure("output row \(r) is not computed") }
            return k
        }
        let D = config.hiddenSize, V = config.vocabSize, H = config.nHeads, d = config.headDim
        let R = compute.count
        if R == 0 || rows.isEmpty { return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: 0) }
        let p0 = cached, S = cached + n
        var X = x.baseAddress!, Y = xOut.baseAddress!
        let a = activations, QKV = a.qkv
        let picked = compute.map { tokens[$0] }
        for t in picked { precondition(t >= 0 && Int(t) < V, "token \(t) outside the vocabulary") }
        picked.withUnsafeBufferPointer { weights.embed(X, $0.baseAddress!, R) }
        let none = Dropout(p: 0, seed: 0, stream: 0)
        let scale = 1 / Float(d).squareRoot()
        let sc = scores.baseAddress!

        for l in 0..<config.nBlocks {
            let w = weights.blocks[l], m = weights.mod(l)
            blockAttentionInput(x: X, w: w, mod: m, rowsPerCond: R, a: a, R, D)
            let kc = kCache[l].baseAddress!, vc = vCache[l].baseAddress!
            parallelChunks(R, grain: 8) { ks in
                for k in ks {
                    let r = compute[k], b = r / n, i = r % n, row = QKV + k * 3 * D
                    rotateHeads(row, position: p0 + i, table: rotary, nHeads: H)
                    rotateHeads(row + D, position: p0 + i, table: rotary, nHeads: H)
                    storeKV(kc, vc, row: row, b: b, position: p0 + i)
                }
            }
            // Every computed row's query over its sequence's S slots (one query per call: the rows of a sequence
            // are not contiguous in the window).
            let att = a.att
            parallelFor(workers) { wk in
                for pair in stride(from: wk, to: R * H, by: workers) {
                    let k = pair / H, hh = pair % H, b = compute[k] / n
                    bd3_attend(att + k * D + hh * d, Int32(D), QKV + k * 3 * D + hh * d, Int32(3 * D),
                               kc + slot(b, hh, 0), vc + slot(b, hh, 0), Int32(d),
                               1, Int32(S), Int32(d), scale, 0, sc + wk * capacity)
                }
            }
            blockAttentionOutput(out: Y, x: X, w: w, mod: m, rowsPerCond: R, a: a, dropAttn: none, dropMLP: none,
                                 keepGeluDerivative: false, R, D)
            swap(&X, &Y)
        }
        for (j, k) in outRows.enumerated() { (Y + j * D).update(from: X + k * D, count: D) }
        let nOut = rows.count
        let mf: UnsafePointer<Float>? = weights.modF.map { UnsafePointer($0.baseAddress!) }
        normModulateForward(h: a.h1, xhat: a.xhat1, rstd: a.rstd1, x: Y, weight: weights.normF,
                            shift: mf, scale: mf.map { $0 + D }, modStride: 2 * D, rowsPerCond: nOut, nOut, D)
        linearForward(logitsBuf.baseAddress!, a.h1, weights.lin, weights.linBias, nOut, D, V)
        return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: nOut * V)
    }
}

/// Naive twin of `forwardReusing` (Double loops over the weights as stored, reference expressions from
/// NaiveLayers.swift). kCache / vCache: per layer (B, H, capacity, d), the slots as the engine holds them; updated
/// in place like the engine's. Returns the logits of `rows` (rows.count, V).
func naiveForwardReusing(weights: InferenceWeights, kCache: inout [[Float]], vCache: inout [[Float]], capacity: Int, cached p0: Int,
                         tokens: [Int32], batch B: Int, compute: [Int], rows: [Int]) -> [Float] {
    let cfg = weights.config, D = cfg.hiddenSize, H = cfg.nHeads, d = cfg.headDim, V = cfg.vocabSize
    let n = tokens.count / B, S = p0 + n
    func matrix(_ w: LinearWeight) -> [Float] {
        var out = [Float](repeating: 0, count: w.rows * w.cols)
        out.withUnsafeMutableBufferPointer { o in for r in 0..<w.rows { w.row(r, into: o.baseAddress! + r * w.cols) } }
        return out
    }
    func linear(_ x: [Float], _ w: [Float], _ bias: UnsafePointer<Float>?, _ OC: Int) -> [Float] {
        let C = x.count
        return (0..<OC).map { o in
            var acc = Double(bias?[o] ?? 0)
            for c in 0..<C { acc += Double(x[c]) * Double(w[o * C + c]) }
            return Float(acc)
        }
    }
    func vec(_ p: UnsafePointer<Float>?, _ off: Int, _ k: Int) -> [Float]? { p.map { Array(UnsafeBufferPointer(start: $0 + off, count: k)) } }
    let embed = matrix(weights.embed)
    var hs = compute.map { r in Array(embed[(Int(tokens[r]) * D)..<(Int(tokens[r]) * D + D)]) }
    for l in 0..<cfg.nBlocks {
        let w = weights.blocks[l], m = weights.mod(l)
        let wqkv = matrix(w.qkv), wout = matrix(w.attnOut), wfc = matrix(w.fc), wproj = matrix(w.proj)
        let norm1 = vec(w.norm1, 0, D)!, norm2 = vec(w.norm2, 0, D)!
        var qs: [[Float]] = []
        for (k, r) in compute.enumerated() {
            let b = r / n, i = r % n
            let h = naiveNormModulate(hs[k], weight: norm1, shift: vec(m, 0, D), scale: vec(m, D, D))
            let qkv = linear(h, wqkv, nil, 3 * D)
            var q = [Float](), key = [Float]()
            for hh in 0..<H {
                q += naiveRotary(Array(qkv[(hh * d)..<(hh * d + d)]), position: p0 + i)
                key += naiveRotary(Array(qkv[(D + hh * d)..<(D + hh * d + d)]), position: p0 + i)
            }
            qs.append(q)
            for hh in 0..<H {
                for c in 0..<d {
                    kCache[l][((b * H + hh) * capacity + p0 + i) * d + c] = key[hh * d + c]
                    vCache[l][((b * H + hh) * capacity + p0 + i) * d + c] = qkv[2 * D + hh * d + c]
                }
            }
        }
        for (k, r) in compute.enumerated() {
            let b = r / n
            var att = [Float](repeating: 0, count: D)
            for hh in 0..<H {
                var s = (0..<S).map { j -> Double in
                    var acc = 0.0
                    for c in 0..<d { acc += Double(qs[k][hh * d + c]) * Double(kCache[l][((b * H + hh) * capacity + j) * d + c]) }
                    return acc / Double(d).squareRoot()
                }
                let mx = s.max()!
                s = s.map { exp($0 - mx) }
                let z = s.reduce(0, +)
                for c in 0..<d {
                    var acc = 0.0
                    for j in 0..<S { acc += s[j] / z * Double(vCache[l][((b * H + hh) * capacity + j) * d + c]) }
                    att[hh * d + c] = Float(acc)
                }
            }
            let g1 = vec(m, 2 * D, D), g2 = vec(m, 5 * D, D)
            let proj = linear(att, wout, nil, D)
            let resid = (0..<D).map { j in hs[k][j] + (g1?[j] ?? 1) * proj[j] }
            let h2 = naiveNormModulate(resid, weight: norm2, shift: vec(m, 3 * D, D), scale: vec(m, 4 * D, D))
            let fc = linear(h2, wfc, w.fcBias, 4 * D).map(naiveGelu)
            let mlp = linear(fc, wproj, w.projBias, D)
            hs[k] = (0..<D).map { j in resid[j] + (g2?[j] ?? 1) * mlp[j] }
        }
    }
    let lin = matrix(weights.lin)
    let mf = weights.modF.map { UnsafePointer($0.baseAddress!) }
    return rows.flatMap { r -> [Float] in
        let k = compute.firstIndex(of: r)!
        let h = naiveNormModulate(hs[k], weight: vec(weights.normF, 0, D)!, shift: vec(mf, 0, D), scale: vec(mf, D, D))
        return linear(h, lin, weights.linBias, V)
    }
}
