// CKernels (Sources/CKernels) and Model/Linear.swift against their naive twins: fp32 and bf16 weights,
// every code path the CPU has (portable C and AVX2), M = 1 … 64 rows, ragged sizes; the bf16 conversions.
import XCTest
import CKernels
@testable import BlockDiffusion

final class KernelTests: XCTestCase {
    override func tearDown() { bd3_set_isa(-1) }

    func rand(_ n: Int, _ rng: inout SplitMix64) -> [Float] { (0..<n).map { _ in Float(rng.nextDouble() * 2 - 1) } }

    /// |got − naive| ≤ 1e-5 · Σ|x||w| per output (fp32 accumulation order differs from the Double twin).
    func check(_ got: [Float], _ want: [Float], _ x: [Float], _ w: LinearWeight, _ N: Int, _ what: String) {
        let C = w.cols
        for n in 0..<N {
            let xs = x[(n * C)..<((n + 1) * C)].reduce(0) { $0 + abs($1) }
            for o in 0..<w.rows {
                let i = n * w.rows + o
                XCTAssertEqual(got[i], want[i], accuracy: 1e-5 * (xs + 1) + 1e-6, "\(what) row \(n) col \(o)")
                if abs(got[i] - want[i]) > 1e-5 * (xs + 1) + 1e-6 { return }
            }
        }
    }

    func testLinearMatchesNaiveTwinEveryRowCountAndPath() {
        var rng = SplitMix64(seed: 11)
        // Ragged: C not a multiple of 8, OC not a multiple of 4 or 8; plus an aligned shape.
        for (OC, C) in [(37, 45), (64, 24), (9, 3)] {
            let wf = rand(OC * C, &rng), bias = rand(OC, &rng)
            for isa in 0...Int(bd3_isa_available()) {
                bd3_set_isa(Int32(isa))
                for dt in WeightDType.allCases {
                    let w = wf.withUnsafeBufferPointer { p in
                        dt == .fp32 ? LinearWeight(fp32: p.baseAddress!, rows: OC, cols: C) : LinearWeight(bf16From: p.baseAddress!, rows: OC, cols: C)
                    }
                    for N in 1...64 {
                        let x = rand(N * C, &rng)
                        for useBias in [false, true] where useBias || N % 5 == 1 {
                            var out = [Float](repeating: .nan, count: N * OC)
                            wf.withUnsafeBufferPointer { _ in
                                bias.withUnsafeBufferPointer { b in
                                    linearForward(&out, x, w, useBias ? b.baseAddress! : nil, N, C, OC)
                                }
                            }
                            check(out, naiveLinearForward(x, w, useBias ? bias : nil, N), x, w, N, "\(dt) isa \(isa) \(OC)x\(C) N=\(N)")
                        }
                    }
                }
            }
        }
    }

    /// The C entry points on a column range [n0, n1) leave other columns alone; big enough to use both workers.
    func testColumnRangeAndLargeShapes() {
        var rng = SplitMix64(seed: 12)
        let OC = 1031, C = 263
        let wf = rand(OC * C, &rng)
        for isa in 0...Int(bd3_isa_available()) {
            bd3_set_isa(Int32(isa))
            let x = rand(5 * C, &rng)
            var out = [Float](repeating: -7, count: 5 * OC)
            wf.withUnsafeBufferPointer { w in bd3_linear_f32(&out, Int32(OC), x, Int32(C), w.baseAddress!, nil, 5, Int32(C), 100, 517) }
            let w = wf.withUnsafeBufferPointer { LinearWeight(fp32: $0.baseAddress!, rows: OC, cols: C) }
            let naive = naiveLinearForward(x, w, nil, 5)
            for n in 0..<5 {
                for o in 0..<OC {
                    if o < 100 || o >= 517 { XCTAssertEqual(out[n * OC + o], -7) }
                    else { XCTAssertEqual(out[n * OC + o], naive[n * OC + o], accuracy: 1e-4) }
                }
            }
            for dt in WeightDType.allCases {
                let w = wf.withUnsafeBufferPointer { p in
                    dt == .fp32 ? LinearWeight(fp32: p.baseAddress!, rows: OC, cols: C) : LinearWeight(bf16From: p.baseAddress!, rows: OC, cols: C)
                }
                for N in [1, 4, 8, 9, 64] {
                    let x = rand(N * C, &rng)
                    var out = [Float](repeating: .nan, count: N * OC)
                    linearForward(&out, x, w, nil, N, C, OC)
                    check(out, naiveLinearForward(x, w, nil, N), x, w, N, "\(dt) isa \(isa) N=\(N)")
                }
            }
        }
    }

    /// A row's result does not depend on the other rows of the call (what makes samples independent of --batch).
    func testRowsAreIndependentOfTheBatch() {
        var rng = SplitMix64(seed: 13)
        let OC = 203, C = 77
        let wf = rand(OC * C, &rng), bias = rand(OC, &rng)
        for isa in 0...Int(bd3_isa_available()) {
            bd3_set_isa(Int32(isa))
            for dt in WeightDType.allCases {
                let w = wf.withUnsafeBufferPointer { p in
                    dt == .fp32 ? LinearWeight(fp32: p.baseAddress!, rows: OC, cols: C) : LinearWeight(bf16From: p.baseAddress!, rows: OC, cols: C)
                }
                let N = 100
                let x = rand(N * C, &rng)
                var all = [Float](repeating: 0, count: N * OC)
                linearForward(&all, x, w, bias, N, C, OC)
                for r in [0, 1, 47, 48, 50, 99] {
                    var one = [Float](repeating: 0, count: OC)
                    Array(x[(r * C)..<((r + 1) * C)]).withUnsafeBufferPointer { linearForward(&one, $0.baseAddress!, w, bias, 1, C, OC) }
                    XCTAssertEqual(one.map(\.bitPattern), all[(r * OC)..<((r + 1) * OC)].map(\.bitPattern), "\(dt) isa \(isa) row \(r)")
                }
            }
        }
    }

    /// The MLP-in product with GELU applied by each worker on its own columns (inference) gives the bits of the
    /// product followed by geluForward over whole rows, on the SIMD and the scalar GELU paths, for widths that are
    /// multiples of 8 (the model's 4·D) split in one part or across the workers.
    func testFusedGeluEqualsProductThenGelu() {
        var rng = SplitMix64(seed: 17)
        let saved = fastMathSIMD
        defer { fastMathSIMD = saved }
        for simd in [false, true] {
            fastMathSIMD = simd
            for (C, OC) in [(8, 32), (64, 256), (40, 200), (96, 1032)] {
                let wf = rand(OC * C, &rng), bias = rand(OC, &rng)
                for dt in WeightDType.allCases {
                    let w = wf.withUnsafeBufferPointer { p in
                        dt == .fp32 ? LinearWeight(fp32: p.baseAddress!, rows: OC, cols: C) : LinearWeight(bf16From: p.baseAddress!, rows: OC, cols: C)
                    }
                    for N in [1, 3, 4, 8, 17] {
                        let x = rand(N * C, &rng).map { $0 * 3 }
                        var pre = [Float](repeating: 0, count: N * OC), want = pre, fusedPre = pre, got = pre
                        linearForward(&pre, x, w, bias, N, C, OC)
                        geluForward(&want, pre, N * OC)
                        linearForward(&fusedPre, x, w, bias, N, C, OC, gelu: &got)
                        XCTAssertEqual(fusedPre.map(\.bitPattern), pre.map(\.bitPattern), "simd \(simd) \(dt) \(C)×\(OC) N \(N) product")
                        XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "simd \(simd) \(dt) \(C)×\(OC) N \(N) gelu")
                    }
                }
            }
        }
    }

    /// bf16 weights packed in 3-row panels (what LinearWeight stores for the products) give exactly the outputs of
    /// the row-major bf16 kernel, on every path, for every row count 1 … 64, ragged K (tails of 1 … 7) and row
    /// counts that leave 0, 1 or 2 row-major rows after the last panel, over whole and split column ranges; and a
    /// packed row unpacks to the rounded values.
    func testPackedBF16EqualsRowMajorBitForBit() {
        var rng = SplitMix64(seed: 19)
        for (OC, C) in [(3, 8), (37, 45), (48, 24), (50, 7), (25, 64), (4, 9)] {
            let wf = rand(OC * C, &rng), bias = rand(OC, &rng)
            var rowMajor = [UInt16](repeating: 0, count: OC * C), packed = rowMajor
            bd3_f32_to_bf16(&rowMajor, wf, OC * C)
            // Packed in two row ranges, as the parallel conversion does.
            bd3_pack_bf16(&packed, wf, Int32(OC), Int32(C), 0, Int32(OC / 2))
            bd3_pack_bf16(&packed, wf, Int32(OC), Int32(C), Int32(OC / 2), Int32(OC))
            XCTAssertEqual(packed.sorted(), rowMajor.sorted(), "\(OC)×\(C): packing is a permutation")
            for r in 0..<OC {
                var a = [Float](repeating: 0, count: C), b = a
                bd3_unpack_bf16_row(&a, packed, Int32(OC), Int32(C), Int32(r))
                bd3_bf16_to_f32(&b, Array(rowMajor[(r * C)..<((r + 1) * C)]), C)
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(OC)×\(C) row \(r)")
            }
            for isa in 0...Int(bd3_isa_available()) {
                bd3_set_isa(Int32(isa))
                for N in Array(1...12) + [16, 17, 33, 48, 49, 64] {
                    let x = rand(N * C, &rng)
                    for (n0, n1) in [(0, OC), (0, OC / 3 * 3), (OC / 6 * 3, OC)] where n1 > n0 {
                        var want = [Float](repeating: -7, count: N * OC), got = want
                        bd3_linear_bf16(&want, Int32(OC), x, Int32(C), rowMajor, bias, Int32(N), Int32(C), Int32(n0), Int32(n1))
                        bd3_linear_bf16_packed(&got, Int32(OC), x, Int32(C), packed, bias, Int32(N), Int32(C), Int32(OC), Int32(n0), Int32(n1))
                        XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "isa \(isa) \(OC)×\(C) N \(N) columns \(n0)..<\(n1)")
                    }
                }
            }
        }
        // LinearWeight packs its bf16 products and keeps an embedding row-major; both widen rows to the same values.
        let wf = rand(37 * 45, &rng)
        let p = wf.withUnsafeBufferPointer { LinearWeight(bf16From: $0.baseAddress!, rows: 37, cols: 45) }
        let r = wf.withUnsafeBufferPointer { LinearWeight(bf16From: $0.baseAddress!, rows: 37, cols: 45, packed: false) }
        XCTAssertTrue(p.packed); XCTAssertFalse(r.packed)
        for row in [0, 5, 35, 36] {
            var a = [Float](repeating: 0, count: 45), b = a
            p.row(row, into: &a); r.row(row, into: &b)
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern))
        }
    }

    /// CKernels bd3_gelu (inference GELU) gives the Swift formulas' bits: geluSIMD on blocks of 8 from the start
    /// and the expf form on the rest (lanes = 1), the expf form everywhere (lanes = 0); AVX2 and portable paths;
    /// lengths with every tail; inputs from −100 to 100 with zeros and tiny values.
    func testGeluKernelMatchesTheSwiftFormulasBitForBit() {
        var rng = SplitMix64(seed: 29)
        func scalar(_ x: Float) -> Float { 0.5 * x * (1 + fastTanh(geluK * (x + 0.044715 * x * x * x))) }
        for n in [1, 7, 8, 9, 16, 23, 64, 1031] {
            var x = (0..<n).map { _ in Float((rng.nextDouble() * 2 - 1) * [0.5, 4, 100][Int(rng.next() % 3)]) }
            if n > 4 { x[0] = 0; x[1] = -0.0; x[2] = 1e-30; x[3] = -1e-30 }
            var want = [Float](repeating: 0, count: n)
            for b in stride(from: 0, to: n / 8 * 8, by: 8) {
                let v = geluSIMD(SIMD8(x[b..<(b + 8)])).value
                for l in 0..<8 { want[b + l] = v[l] }
            }
            for i in (n / 8 * 8)..<n { want[i] = scalar(x[i]) }
            let allScalar = x.map(scalar)
            for isa in 0...Int(bd3_isa_available()) {
                bd3_set_isa(Int32(isa))
                var got = [Float](repeating: .nan, count: n), got0 = got
                bd3_gelu(&got, x, n, 1)
                bd3_gelu(&got0, x, n, 0)
                XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "isa \(isa) n \(n) lanes")
                XCTAssertEqual(got0.map(\.bitPattern), allScalar.map(\.bitPattern), "isa \(isa) n \(n) scalar")
            }
        }
    }

    func testBF16Conversions() {
        let cases: [(Float, UInt16)] = [(1, 0x3f80), (-2, 0xc000), (0, 0), (.infinity, 0x7f80), (-.infinity, 0xff80),
                                        (Float(bitPattern: 0x3f808000), 0x3f80),   // tie → even (down)
                                        (Float(bitPattern: 0x3f818000), 0x3f82),   // tie → even (up)
                                        (Float(bitPattern: 0x3f808001), 0x3f81),   // above the tie
                                        (Float(bitPattern: 0x7f7fffff), 0x7f80)]   // largest float rounds to inf
        for (f, want) in cases {
            var src = f, dst: UInt16 = 0
            bd3_f32_to_bf16(&dst, &src, 1)
            XCTAssertEqual(dst, want, "\(f)")
            var back: Float = 0
            bd3_bf16_to_f32(&back, &dst, 1)
            XCTAssertEqual(back.bitPattern, UInt32(want) << 16)
        }
        var nan = Float.nan, d: UInt16 = 0
        bd3_f32_to_bf16(&d, &nan, 1)
        var back: Float = 0
        bd3_bf16_to_f32(&back, &d, 1)
        XCTAssertTrue(back.isNaN)
        // Relative rounding error ≤ 2⁻⁸ (half a unit in the last of 8 significant bits) on random values.
        var rng = SplitMix64(seed: 3)
        let xs = rand(1000, &rng).map { $0 * 1000 }
        var h = [UInt16](repeating: 0, count: xs.count), ys = [Float](repeating: 0, count: xs.count)
        bd3_f32_to_bf16(&h, xs, xs.count); bd3_bf16_to_f32(&ys, h, xs.count)
        for i in xs.indices { XCTAssertLessThanOrEqual(abs(ys[i] - xs[i]), abs(xs[i]) / 256) }
    }

    func testF16Conversion() {
        let cases: [(UInt16, Float)] = [(0x3c00, 1), (0xc000, -2), (0x0000, 0), (0x7c00, .infinity), (0x0001, 5.9604645e-08),
                                        (0x03ff, 6.097555e-05), (0x7bff, 65504), (0x3555, 0.33325195)]
        for (h, f) in cases {
            var src = h, dst: Float = 0
            bd3_f16_to_f32(&dst, &src, 1)
            XCTAssertEqual(dst, f, "\(h)")
        }
        var src: UInt16 = 0x7e00, dst: Float = 0
        bd3_f16_to_f32(&dst, &src, 1)
        XCTAssertTrue(dst.isNaN)
    }
}

/// The spinning worker pool behind parallelFor (CKernels pool.c): every index runs exactly once, for loops back to
/// back, nested loops (run by libdispatch) and two threads issuing loops at the same time (one gets the pool).
final class WorkerPoolTests: XCTestCase {
    func testEveryIndexRunsOnceBackToBackNestedAndConcurrent() {
        startWorkerPool()
        let slots = 64
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 2 * slots * slots)
        defer { counts.deallocate() }
        counts.initialize(repeating: 0, count: 2 * slots * slots)
        // Back to back, n = 2 … 9 (each index owns its counter: no two tasks write the same one).
        for round in 0..<2000 {
            let n = 2 + round % 8
            parallelFor(n) { i in counts[i] += 1 }
        }
        // Index i of a loop of n runs in the loops with n > i: 250 loops per n.
        for i in 0..<9 { XCTAssertEqual(counts[i], 250 * (2...9).filter { $0 > i }.count, "index \(i)") }
        // Nested: the inner loops of every outer task run completely.
        counts.update(repeating: 0, count: slots * slots)
        for _ in 0..<200 {
            parallelFor(4) { i in parallelFor(3) { j in counts[i * slots + j] += 1 } }
        }
        for i in 0..<4 { for j in 0..<3 { XCTAssertEqual(counts[i * slots + j], 200, "nested \(i) \(j)") } }
        // Two threads at once, each with its own counters.
        nonisolated(unsafe) let c = counts
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            let base = c + slots * slots + t * slots
            for _ in 0..<1000 { parallelFor(5) { i in base[i] += 1 } }
        }
        for t in 0..<2 { for i in 0..<5 { XCTAssertEqual(counts[slots * slots + t * slots + i], 1000, "thread \(t) index \(i)") } }
    }
}
