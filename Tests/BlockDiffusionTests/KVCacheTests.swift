// The cached inference forward (Model/CachedForward.swift) against its naive attention twin, the model's
// non-cached `.blockCausal` window forward, the `.blockDiffusion` training forward on [x_t', x_0'], and the
// PyTorch sampling-window fixture (Fixtures/parity/bd3_window.safetensors); cache sliding bookkeeping.
import XCTest
import CKernels
@testable import BlockDiffusion

final class KVCacheTests: XCTestCase {

    func testAttentionKernelMatchesNaiveTwin() {
        let B = 2, n = 3, S = 7, H = 2, d = 4, D = H * d, cap = 9
        var rng = SplitMix64(seed: 1)
        func rand(_ k: Int) -> [Float] { (0..<k).map { _ in Float(rng.nextDouble() * 2 - 1) } }
        let q = rand(B * n * 3 * D), keys = rand(B * cap * D), values = rand(B * cap * D)
        for (causal, isa) in [(false, -1), (true, -1), (false, 0), (true, 0)] {
            bd3_set_isa(Int32(isa)); defer { bd3_set_isa(-1) }
            let naive = naiveCachedAttention(q: q, qStride: 3 * D, keys: keys, values: values, capacity: cap,
                                             B: B, n: n, S: S, nHeads: H, headDim: d, causal: causal)
            var out = [Float](repeating: 0, count: B * n * D)
            var scratch = [Float](repeating: 0, count: 2 * n * S)
            cachedAttention(out: &out, q: q, qStride: 3 * D, keys: keys, values: values, capacity: cap, B: B, n: n, S: S,
                            nHeads: H, headDim: d, causal: causal, scratch: &scratch, workers: 2)
            for i in out.indices { XCTAssertEqual(out[i], naive[i], accuracy: 1e-5, "causal=\(causal) \(i)") }
            if causal { XCTAssertNotEqual(out, naiveCachedAttention(q: q, qStride: 3 * D, keys: keys, values: values, capacity: cap, B: B, n: n, S: S, nHeads: H, headDim: d, causal: false)) }
        }
    }

    /// Head sizes that are multiples of 8 take the AVX2 kernel's 8-keys-at-a-time path (scores reduced together,
    /// exp on 8 lanes); key counts around multiples of 8 exercise its tails.
    func testAttentionKernelMatchesNaiveTwinWideHeads() {
        var rng = SplitMix64(seed: 2)
        func rand(_ k: Int) -> [Float] { (0..<k).map { _ in Float(rng.nextDouble() * 4 - 2) } }
        for d in [8, 16, 24, 32, 64, 128] {
            let B = 2, H = 2, D = H * d, cap = 72
            let keys = rand(B * cap * D), values = rand(B * cap * D)
            for (n, S) in [(1, 1), (1, 8), (3, 7), (4, 9), (4, 17), (8, 64), (2, 71), (11, 72)] {
                let q = rand(B * n * 3 * D)
                for causal in [false, true] {
                    let naive = naiveCachedAttention(q: q, qStride: 3 * D, keys: keys, values: values, capacity: cap,
                                                     B: B, n: n, S: S, nHeads: H, headDim: d, causal: causal)
                    for isa in 0...Int(bd3_isa_available()) {
                        bd3_set_isa(Int32(isa)); defer { bd3_set_isa(-1) }
                        var out = [Float](repeating: .nan, count: B * n * D)
                        var scratch = [Float](repeating: 0, count: 2 * min(n, 8) * S)
                        cachedAttention(out: &out, q: q, qStride: 3 * D, keys: keys, values: values, capacity: cap, B: B, n: n,
                                        S: S, nHeads: H, headDim: d, causal: causal, scratch: &scratch, workers: 2)
                        var worst: Float = 0
                        for i in out.indices { worst = max(worst, abs(out[i] - naive[i])) }
                        XCTAssertLessThan(worst, 1e-5, "d=\(d) n=\(n) S=\(S) causal=\(causal) isa=\(isa)")
                    }
                }
            }
        }
    }

    /// The kernel shares key and value loads between the rows of a chunk; every row's result must still be the one
    /// a call for that row alone gives, bit for bit (what makes samples independent of the batch and of folding).
    /// Head sizes cover each register grouping of the values (d/8 = 1, 2, 3, 4, 8, 16), row counts beyond one
    /// group of 8, key counts around the 8-key groups and the 64-key value blocks.
    func testAttentionRowsAreIndependentBitForBit() {
        var rng = SplitMix64(seed: 3)
        func rand(_ k: Int) -> [Float] { (0..<k).map { _ in Float(rng.nextDouble() * 4 - 2) } }
        for isa in 0...Int(bd3_isa_available()) {
            bd3_set_isa(Int32(isa)); defer { bd3_set_isa(-1) }
            for d in [8, 16, 24, 32, 64, 128] {
                let D = 2 * d, cap = 150
                let keys = rand(cap * D), values = rand(cap * D)
                for (n, S) in [(2, 9), (3, 17), (5, 64), (8, 65), (11, 130), (16, 150), (4, 129)] {
                    let q = rand(n * D)
                    for causal in [false, true] {
                        var out = [Float](repeating: .nan, count: n * D)
                        var scratch = [Float](repeating: 0, count: min(n, 8) * S)
                        bd3_attend(&out, Int32(D), q, Int32(D), keys, values, Int32(D), Int32(n), Int32(S), Int32(d), 0.3,
                                   causal ? 1 : 0, &scratch)
                        for i in 0..<n {
                            var one = [Float](repeating: .nan, count: d)
                            var sc1 = [Float](repeating: 0, count: S)
                            let Si = causal ? S - n + i + 1 : S
                            q.withUnsafeBufferPointer { qp in
                                bd3_attend(&one, Int32(d), qp.baseAddress! + i * D, Int32(D), keys, values, Int32(D), 1, Int32(Si),
                                           Int32(d), 0.3, 0, &sc1)
                            }
                            XCTAssertEqual(Array(out[(i * D)..<(i * D + d)]), one, "isa=\(isa) d=\(d) n=\(n) S=\(S) causal=\(causal) row \(i)")
                        }
                    }
                }
            }
        }
    }

    /// Feeds clean blocks 0..<k-1 with store, then the noisy block; compares with both non-cached forwards.
    func testCachedEqualsWindowAndTrainingForwards() throws {
        let L = 16, bs = 4, B = 2, V = 23
        let model = makeSamplingModel(samplingConfig(length: L), seed: 21)
        let cache = try CachedDiT(model: model, maxBatch: B, maxChunk: bs, capacity: L)
        let ref = DiT(config: model.config, maxBatch: B, maxTokens: 2 * L)
        ref.parameters.update(from: UnsafeBufferPointer(model.parameters))   // same weights, own activations
        var rng = SplitMix64(seed: 5)
        let x0 = (0..<(B * L)).map { _ in Int32(rng.next() % 22) }
        for k in 1...(L / bs) {
            var noisy = [Int32]()
            for b in 0..<B { for i in 0..<bs { noisy.append(i % 2 == 0 ? 22 : x0[b * L + (k - 1) * bs + i]) } }
            cache.reset()
            for j in 0..<(k - 1) {
                var blk = [Int32]()
                for b in 0..<B { blk += x0[(b * L + j * bs)..<(b * L + (j + 1) * bs)] }
                cache.forward(tokens: blk, batch: B, store: true, logits: false)
            }
            let cached = Array(cache.forward(tokens: noisy, batch: B, store: false))
            XCTAssertEqual(cache.cached, (k - 1) * bs)
            // Window forward: (B, k·bs) = clean blocks + noisy block, block-causal mask.
            var win = [Int32]()
            for b in 0..<B { win += x0[(b * L)..<(b * L + (k - 1) * bs)]; win += noisy[(b * bs)..<((b + 1) * bs)] }
            let w = win.withUnsafeBufferPointer { Array(ref.forward(tokens: $0, batch: B, layout: .blockCausal(blockSize: bs), sigma: nil, training: false, dropoutSeed: 0)) }
            XCTAssertEqual(w.count, cached.count)
            var maxDiff: Float = 0
            for i in w.indices { maxDiff = max(maxDiff, abs(w[i] - cached[i])) }
            XCTAssertLessThan(maxDiff, 1e-4, "window k=\(k)")
            // Training forward on [x_t', x_0]: x_t' = x0 with block k−1 noisy; rows of block k−1.
            var inp = [Int32]()
            for b in 0..<B {
                var xt = Array(x0[(b * L)..<((b + 1) * L)])
                for i in 0..<bs { xt[(k - 1) * bs + i] = noisy[b * bs + i] }
                inp += xt; inp += x0[(b * L)..<((b + 1) * L)]
            }
            let t = inp.withUnsafeBufferPointer { Array(ref.forward(tokens: $0, batch: B, layout: .blockDiffusion(blockSize: bs), sigma: nil, training: false, dropoutSeed: 0)) }
            for b in 0..<B {
                for i in 0..<bs {
                    for v in 0..<V {
                        XCTAssertEqual(t[(b * L + (k - 1) * bs + i) * V + v], cached[(b * bs + i) * V + v], accuracy: 1e-4)
                    }
                }
            }
        }
    }

    func testSelectedOutputRowsEqualTheFullLogits() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 23)
        let cache = try CachedDiT(model: model, maxBatch: 2, maxChunk: 4, capacity: 16)
        let blk: [Int32] = [1, 2, 3, 4, 5, 22, 7, 22]
        cache.forward(tokens: [9, 8, 7, 6, 5, 4, 3, 2], batch: 2, store: true, logits: false)
        let full = Array(cache.forward(tokens: blk, batch: 2, store: false))
        let rows = [6, 1, 5]
        let some = Array(cache.forward(tokens: blk, batch: 2, store: false, rows: rows))
        XCTAssertEqual(some.count, 3 * 23)
        // Equal up to sgemm rounding (the kernel's blocking depends on the row count).
        for (k, r) in rows.enumerated() { for v in 0..<23 { XCTAssertEqual(some[k * 23 + v], full[r * 23 + v], accuracy: 1e-5) } }
        XCTAssertNotEqual(Array(some[0..<23]), Array(full[(5 * 23)..<(6 * 23)]))
    }

    func testPyTorchSamplingWindowFixture() throws {
        let url = try fixtureURL("bd3_window")
        let file = try SafetensorsFile(path: url.path)
        let m = file.metadata
        let cfg = ModelConfig(vocabSize: Int(m["vocab_size"]!)!, hiddenSize: Int(m["hidden_size"]!)!, nBlocks: Int(m["n_blocks"]!)!,
                              nHeads: Int(m["n_heads"]!)!, condDim: Int(m["cond_dim"]!)!, length: Int(m["length"]!)!, dropout: 0)
        let bs = Int(m["block_size"]!)!, B = Int(m["batch"]!)!, V = cfg.vocabSize
        let model = DiT(config: cfg, maxBatch: 1, maxTokens: 1)
        for t in model.tensors {
            let v = try file.floats(t.name)
            XCTAssertEqual(v.count, t.count)
            model.tensor(named: t.name)!.update(fromContentsOf: v)
        }
        let cache = try CachedDiT(model: model, maxBatch: B, maxChunk: bs, capacity: cfg.length)
        for k in 1...Int(m["windows"]!)! {
            let win = try file.int32s("input.window\(k)")
            let expect = try file.floats("expect.window\(k).logits")
            let T = k * bs
            cache.reset()
            for j in 0...(k - 1) {
                var blk = [Int32]()
                for b in 0..<B { blk += win[(b * T + j * bs)..<(b * T + (j + 1) * bs)] }
                let logits = cache.forward(tokens: blk, batch: B, store: j < k - 1, logits: j == k - 1)
                if j == k - 1 {
                    for b in 0..<B {
                        for i in 0..<bs {
                            for v in 0..<V {
                                let e = expect[(b * T + (k - 1) * bs + i) * V + v]
                                XCTAssertEqual(logits[(b * bs + i) * V + v], e, accuracy: 1e-5 + 1e-4 * abs(e), "window \(k)")
                            }
                        }
                    }
                }
            }
        }
    }

    func testSlidingDropsTheOldestBlockAndKeepsTheRest() throws {
        let L = 8, bs = 4
        let model = makeSamplingModel(samplingConfig(length: L), seed: 22)
        let small = try CachedDiT(model: model, maxBatch: 1, maxChunk: bs, capacity: L)
        let big = try CachedDiT(model: model, maxBatch: 1, maxChunk: bs, capacity: 3 * L)
        let blocks: [[Int32]] = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
        for blk in blocks[0..<2] { small.forward(tokens: blk, batch: 1, store: true, logits: false); big.forward(tokens: blk, batch: 1, store: true, logits: false) }
        let slid = Array(small.forward(tokens: blocks[2], batch: 1, store: true))
        let full = Array(big.forward(tokens: blocks[2], batch: 1, store: true))
        XCTAssertEqual(small.cached, 8); XCTAssertEqual(small.dropped, 4); XCTAssertEqual(big.cached, 12)
        // k/v of block 1 moved to slots 0..<4 (computed with block 0 in context, as the reference's shifted cache);
        // block 2 at slots 4..<8 — identical to the unslid cache in layer 0, whose qkv sees no context. Keys are
        // stored rotated at their window position: un-rotated (in Double) they agree with the unslid cache's.
        let D = model.config.hiddenSize, H = model.config.nHeads, half = model.config.headDim / 2
        let inv = RotaryTable.invFreq(headDim: model.config.headDim)
        func unrotate(_ k: [Float], slot: Int) -> [Double] {
            var out = [Double](repeating: 0, count: D)
            for hh in 0..<H {
                for i in 0..<half {
                    let a = -Double(slot) * Double(inv[i]), x1 = Double(k[hh * 2 * half + i]), x2 = Double(k[hh * 2 * half + i + half])
                    out[hh * 2 * half + i] = x1 * cos(a) - x2 * sin(a); out[hh * 2 * half + i + half] = x2 * cos(a) + x1 * sin(a)
                }
            }
            return out
        }
        for l in 0..<model.config.nBlocks {
            for slot in 0..<(l == 0 ? 8 : 4) {
                for (a, b) in zip(unrotate(small.cacheRow(l, position: slot), slot: slot),
                                  unrotate(big.cacheRow(l, position: slot + 4), slot: slot + 4)) { XCTAssertEqual(a, b, accuracy: 1e-5) }
                XCTAssertEqual(small.cacheRow(l, values: true, position: slot), big.cacheRow(l, values: true, position: slot + 4))
            }
        }
        // Dropping block 0 from the keys changes the logits (the window really moved).
        XCTAssertGreaterThan(zip(slid, full).map { abs($0 - $1) }.max()!, 1e-4)
    }
}
