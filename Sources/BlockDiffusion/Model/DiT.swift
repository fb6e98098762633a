// The reference DiT backbone (bd3lms `models/dit.py`), forward and backward on CPU, llm.c style.
//
//   x = E[tokens]                                          (B, T, D)
//   c = silu(sigma_map(timestep_embedding(sigma)))          (nc, cond)   nc = B if time conditioning else 1 (sigma ≡ 0)
//   per block: sh1,sc1,g1,sh2,sc2,g2 = adaLN(c)             (nc, 6D)
//     h = LN1(x)(1+sc1)+sh1 ; qkv = h Wqkvᵀ ; rope(q,k) ; a = attn(qkv) ; x = x + g1 drop(a Woutᵀ)
//     h = LN2(x)(1+sc2)+sh2 ; x = x + g2 drop(W2 gelu_tanh(W1 h + b1) + b2)
//   AR (config.causal): no adaLN and no sigma_map: h = LN(x), gates are 1.
//   logits = (LNf(x)(1+scf)+shf) Wlinᵀ + blin for the output rows only (x_t half for BD3)
//
// BD3's last block computes only the x_t rows after their K, V (the x_0 rows are needed only as keys/values).
// DiT.init sets OpenBLAS to one thread: every matmul is split across the 2 workers by us (see Layers.swift).
//
// Public API:
//   DiT(config:maxBatch:maxTokens:maxOutputTokens:inference:)   allocates parameters, gradients, activations once
//                                     (maxTokens = 2L for BD3; maxOutputTokens = logit rows per sequence).
//                                     inference: true = forward only: no gradient buffer, no backward scratch,
//                                     one set of per-block activations reused by every block; backward() traps.
//   DiT(sharingWeightsOf:maxBatch:maxTokens:maxOutputTokens:)   inference-only, reads another DiT's parameter
//                                     buffer in place (no copy; keeps that model alive; sees its later writes)
//   isInference, memoryBytes          memory accounting (owned parameters + gradients + activations)
//   tensors: [ParameterTensor]        reference state_dict names (with the `backbone.` prefix)
//   parameters / gradients            flat buffers; tensor(named:) / gradient(named:) views
//   initialize(seed:)                 reference init (adaLN + output linear zero)
//   forward(tokens:batch:layout:sigma:training:dropoutSeed:) -> logits (B, Lout, V)
//   backward(dLogits:)                accumulates into gradients; zeroGradients()
//   outputLength(layout:tokensPerSequence:), blockOutput(_:), modulation(_:), condition
//   residualStream(_:), finalModulation; profiling / phaseTimes (per-phase wall time)
//   save(safetensors:metadata:extraScalars:), load(safetensors:) / load(file:ignoreUnknown:) -> extra scalars
//   (the cached inference forward lives in Model/CachedForward.swift: CachedDiT reads these parameters)
import Foundation
import COpenBLAS

public final class DiT {
    public let config: ModelConfig
    public let maxBatch: Int
    public let maxTokens: Int
    /// Logit rows per sequence the buffers hold (BD3 needs only L = maxTokens/2; the (rows, V) logits dominate memory).
    public let maxOutputTokens: Int
    public private(set) var tensors: [ParameterTensor] = []
    public let parameters: UnsafeMutableBufferPointer<Float>
    /// Empty (count 0) for an inference-only model.
    public let gradients: UnsafeMutableBufferPointer<Float>
    public var parameterCount: Int { parameters.count }
    /// Floats in the one activation buffer (forward activations + backward scratch), for memory accounting.
    public var activationCount: Int { acts.count }
    /// Forward only (`inference: true` or `sharingWeightsOf:`): no gradients, backward is refused.
    public let isInference: Bool
    /// The model whose parameter buffer this one reads (`sharingWeightsOf:`), kept alive; nil = owns its buffer.
    let weightOwner: DiT?
    /// The calloc'd block `parameters` lies in (nil when the weights are another model's).
    private var parameterBlock: UnsafeMutableRawPointer?
    /// Bytes of the float buffers this model allocated: its own parameters (none when sharing), gradients, activations.
    public var memoryBytes: Int {
        MemoryLayout<Float>.stride * ((weightOwner == nil ? parameters.count : 0) + gradients.count + acts.count)
    }

    // Parameter offsets.
    struct BlockParams { var norm1 = 0, qkv = 0, attnOut = 0, norm2 = 0, fc = 0, fcBias = 0, proj = 0, projBias = 0, ada = 0, adaBias = 0 }
    var pEmbed = 0, pSig1 = 0, pSig1b = 0, pSig2 = 0, pSig2b = 0
    var pBlocks: [BlockParams] = []
    var pNormF = 0, pLin = 0, pLinBias = 0, pAdaF = 0, pAdaFBias = 0

    // Activations (one buffer).
    struct BlockActs { var xhat1 = 0, rstd1 = 0, h1 = 0, qkv = 0, att = 0, lse = 0, attProj = 0, xhat2 = 0, rstd2 = 0, h2 = 0, fc = 0, gelu = 0, fcProj = 0, mod = 0 }
    let acts: UnsafeMutableBufferPointer<Float>
    var aResid: [Int] = []          // nBlocks + 1 residual streams (N, D)
    var aBlocks: [BlockActs] = []
    var aResid2 = 0, aXf = 0, aXhatF = 0, aRstdF = 0, aHf = 0, aLogits = 0
    var aFreq = 0, aT1 = 0, aT1s = 0, aT3 = 0, aC = 0, aModF = 0
    // Backward scratch.
    var gResid = 0, gTmp = 0, gBranch = 0, gFc = 0, gQkv = 0, gAtt = 0, gXf = 0, gHf = 0, gMod = 0, gModF = 0, gC = 0, gT = 0

    /// The blocks' weights for the shared block body (Model/Block.swift): fp32 views of `parameters`, always sgemm.
    var blockWeights: [BlockWeights] = []
    let rotary: RotaryTable
    /// Wall time (seconds) per layer kind (F./B. + embedding, conditioning, block, output) accumulated over
    /// forward/backward calls while `profiling` is on (benchmarks): one clock read per layer, not per kernel.
    public var profiling = false
    /// Operand precision of the matmuls in forward/backward (see Precision.swift); fp32 weights either way.
    public var precision: Precision = .fp32
    public var phaseTimes: [String: Double] = [:]
    @inline(__always) func timed(_ name: String, _ body: () -> Void) {
        if !profiling { body(); return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        phaseTimes[name, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }
    let positions: UnsafeMutableBufferPointer<Int32>
    let tokenCopy: UnsafeMutableBufferPointer<Int32>

    // State of the last forward (the backward needs it).
    var last: (batch: Int, T: Int, layout: AttentionLayout, training: Bool, seed: UInt64, nCond: Int, lout: Int)?
    var plan: AttentionPlan?
    var lastBlockPlan: AttentionPlan?

    /// maxTokens: model input length per sequence (2L for BD3). maxOutputTokens: logit rows per sequence
    /// (default maxTokens; pass L for BD3 training to halve the logits buffer).
    /// `inference`: a forward-only model for sampling and scoring. It has no gradient buffer (the size of the
    /// weights) and no backward scratch, and its blocks share one set of per-block activations (only the
    /// backward needs each block's); `backward` then stops with a precondition failure. Same logits, bit for bit.
    public convenience init(config: ModelConfig, maxBatch: Int, maxTokens: Int, maxOutputTokens: Int? = nil, inference: Bool = false) {
        self.init(config: config, maxBatch: maxBatch, maxTokens: maxTokens, maxOutputTokens: maxOutputTokens,
                  inference: inference, weightsOf: nil)
    }

    /// An inference-only model (see `inference`) with its own activation sizes that reads `source`'s parameters
    /// in place instead of copying them (e.g. a sampling window wider than the loaded checkpoint's model).
    public convenience init(sharingWeightsOf source: DiT, maxBatch: Int, maxTokens: Int, maxOutputTokens: Int? = nil) {
        self.init(config: source.config, maxBatch: maxBatch, maxTokens: maxTokens, maxOutputTokens: maxOutputTokens,
                  inference: true, weightsOf: source)
    }

    init(config: ModelConfig, maxBatch: Int, maxTokens: Int, maxOutputTokens: Int?, inference: Bool, weightsOf source: DiT?) {
        precondition((try? config.validate()) != nil, "invalid model config \(config)")
        // All BLAS parallelism is ours (rows split across workers, heads across workers): see matmulForward.
        openblas_set_num_threads(1)
        self.config = config; self.maxBatch = maxBatch; self.maxTokens = maxTokens
        self.maxOutputTokens = min(maxOutputTokens ?? maxTokens, maxTokens)
        let V = config.vocabSize, D = config.hiddenSize, C = config.condDim, L = config.nBlocks
        var off = 0
        var table: [ParameterTensor] = []
        func p(_ name: String, _ shape: [Int]) -> Int {
            table.append(ParameterTensor(name: "backbone." + name, shape: shape, offset: off))
            defer { off += shape.reduce(1, *) }
            return off
        }
        pEmbed = p("vocab_embed.embedding", [V, D])
        if config.hasAdaLN {
            pSig1 = p("sigma_map.mlp.0.weight", [C, timestepFrequencySize]); pSig1b = p("sigma_map.mlp.0.bias", [C])
            pSig2 = p("sigma_map.mlp.2.weight", [C, C]); pSig2b = p("sigma_map.mlp.2.bias", [C])
        }
        for i in 0..<L {
            var b = BlockParams()
            b.norm1 = p("blocks.\(i).norm1.weight", [D])
            b.qkv = p("blocks.\(i).attn_qkv.weight", [3 * D, D])
            b.attnOut = p("blocks.\(i).attn_out.weight", [D, D])
            b.norm2 = p("blocks.\(i).norm2.weight", [D])
            b.fc = p("blocks.\(i).mlp.0.weight", [4 * D, D]); b.fcBias = p("blocks.\(i).mlp.0.bias", [4 * D])
            b.proj = p("blocks.\(i).mlp.2.weight", [D, 4 * D]); b.projBias = p("blocks.\(i).mlp.2.bias", [D])
            if config.hasAdaLN {
                b.ada = p("blocks.\(i).adaLN_modulation.weight", [6 * D, C]); b.adaBias = p("blocks.\(i).adaLN_modulation.bias", [6 * D])
            }
            pBlocks.append(b)
        }
        pNormF = p("output_layer.norm_final.weight", [D])
        pLin = p("output_layer.linear.weight", [V, D]); pLinBias = p("output_layer.linear.bias", [V])
        if config.hasAdaLN {
            pAdaF = p("output_layer.adaLN_modulation.weight", [2 * D, C]); pAdaFBias = p("output_layer.adaLN_modulation.bias", [2 * D])
        }
        tensors = table
        isInference = inference
        weightOwner = source
        if let source {
            precondition(source.parameters.count == off, "shared weights: the source model has another size")
            parameters = source.parameters
        } else {
            // calloc: zero like initialize(repeating: 0), but a large buffer comes as fresh untouched pages, so the
            // resident memory grows only as the loader writes tensors (and a bf16 load returns each matrix's pages).
            // 16 floats more, and the buffer starts at the first 64-byte boundary (calloc gives 16-byte ones): weight
            // rows of a multiple of 16 floats then start on cache lines, as the kernels' 32-byte loads want.
            let block = calloc(max(off, 1) + 16, MemoryLayout<Float>.stride)!
            parameterBlock = block
            let raw = UnsafeMutableRawPointer(bitPattern: (Int(bitPattern: block) + 63) & ~63)!
            adviseHugePages(raw, bytes: off * MemoryLayout<Float>.stride)
            parameters = UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: max(off, 1)), count: off)
        }
        gradients = .allocate(capacity: inference ? 0 : off); gradients.initialize(repeating: 0)

        // Activations.
        let N = maxBatch * maxTokens, H = config.nHeads
        var a = 0
        func act(_ n: Int) -> Int { defer { a += n }; return a }
        for _ in 0...L { aResid.append(act(N * D)) }
        for l in 0..<L {
            var s = BlockActs()
            if inference && l > 0 {
                // Nothing reads a block's activations after the next block starts except the backward.
                s = aBlocks[0]
            } else {
                s.xhat1 = act(N * D); s.rstd1 = act(N); s.h1 = act(N * D); s.qkv = act(N * 3 * D); s.att = act(N * D)
                s.lse = act(maxBatch * H * maxTokens); s.attProj = act(N * D); s.xhat2 = act(N * D); s.rstd2 = act(N)
                s.h2 = act(N * D); s.fc = act(N * 4 * D) /* pre-activation, then gelu' */; s.gelu = act(N * 4 * D); s.fcProj = act(N * D)
            }
            s.mod = act(maxBatch * 6 * D)      // per block: computeConditioning fills every block's first
            aBlocks.append(s)
        }
        aResid2 = act(N * D); aXf = act(N * D); aXhatF = act(N * D); aRstdF = act(N); aHf = act(N * D); aLogits = act(maxBatch * self.maxOutputTokens * V)
        aFreq = act(maxBatch * timestepFrequencySize); aT1 = act(maxBatch * C); aT1s = act(maxBatch * C)
        aT3 = act(maxBatch * C); aC = act(maxBatch * C); aModF = act(maxBatch * 2 * D)
        if !inference {
            gResid = act(N * D); gTmp = act(N * D); gBranch = act(N * D); gFc = act(N * 4 * D); gQkv = act(N * 3 * D)
            gAtt = act(N * D); gXf = act(N * D); gHf = act(N * D); gMod = act(maxBatch * 6 * D); gModF = act(maxBatch * 2 * D)
            gC = act(maxBatch * C); gT = act(maxBatch * C)
        }
        acts = .allocate(capacity: a); acts.initialize(repeating: 0)
        rotary = RotaryTable(headDim: config.headDim, maxPositions: maxTokens)
        let base = UnsafePointer(parameters.baseAddress!)
        func lw(_ o: Int, _ r: Int, _ c: Int) -> LinearWeight { LinearWeight(fp32: base + o, rows: r, cols: c, alwaysBLAS: true) }
        blockWeights = pBlocks.map { b in
            BlockWeights(norm1: base + b.norm1, qkv: lw(b.qkv, 3 * D, D), attnOut: lw(b.attnOut, D, D), norm2: base + b.norm2,
                         fc: lw(b.fc, 4 * D, D), fcBias: base + b.fcBias, proj: lw(b.proj, D, 4 * D), projBias: base + b.projBias)
        }
        positions = .allocate(capacity: maxTokens); positions.initialize(repeating: 0)
        tokenCopy = .allocate(capacity: N); tokenCopy.initialize(repeating: 0)
    }

    /// True after `releaseParameters()`: the parameter memory went back to the OS.
    public private(set) var parametersReleased = false

    /// Returns the parameter buffer's memory to the OS (its whole pages; they read as zero afterwards) once an
    /// inference copy of the weights exists (InferenceWeights bf16): the fp32 copy no longer counts in the RSS.
    /// forward and backward then stop with a precondition failure.
    public func releaseParameters() {
        precondition(weightOwner == nil, "release the parameters of the model that owns them")
        guard !parametersReleased, parameters.count > 0 else { return }
        parametersReleased = true
        releasePages(0, parameters.count)
    }

    /// Returns to the OS the whole pages inside parameters[offset ..< offset + count] (they read as zero afterwards;
    /// the partial pages at both ends are shared with the neighbouring tensors and kept). The bf16 load releases
    /// each fp32 matrix this way right after converting it, so the whole fp32 model is never resident.
    func releasePages(_ offset: Int, _ count: Int) {
        precondition(weightOwner == nil && offset >= 0 && offset + count <= parameters.count)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: parameters.baseAddress! + offset) + page - 1) / page * page
        let end = Int(bitPattern: parameters.baseAddress! + offset + count) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, Int32(MADV_DONTNEED)) }
    }

    deinit {
        free(parameterBlock)   // calloc'd (nil when the weights are another model's)
        gradients.deallocate(); acts.deallocate(); positions.deallocate(); tokenCopy.deallocate()
    }

    // MARK: Views

    /// Block l's activation buffers for the shared block body (the post-attention residual is one shared buffer).
    func blockActivations(_ l: Int) -> BlockActivations {
        let s = aBlocks[l]
        return BlockActivations(xhat1: A(s.xhat1), rstd1: A(s.rstd1), h1: A(s.h1), qkv: A(s.qkv), att: A(s.att), attProj: A(s.attProj),
                                resid2: A(aResid2), xhat2: A(s.xhat2), rstd2: A(s.rstd2), h2: A(s.h2), fc: A(s.fc), gelu: A(s.gelu),
                                fcProj: A(s.fcProj))
    }

    public func tensor(named name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard let t = tensors.first(where: { $0.name == name }) else { return nil }
        return UnsafeMutableBufferPointer(rebasing: parameters[t.offset..<(t.offset + t.count)])
    }
    public func gradient(named name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard !isInference, let t = tensors.first(where: { $0.name == name }) else { return nil }
        return UnsafeMutableBufferPointer(rebasing: gradients[t.offset..<(t.offset + t.count)])
    }
    public func zeroGradients() { gradients.update(repeating: 0) }

    @inline(__always) func P(_ o: Int) -> FloatPtr { parameters.baseAddress! + o }
    @inline(__always) func G(_ o: Int) -> FloatPtr { gradients.baseAddress! + o }
    @inline(__always) func A(_ o: Int) -> FloatPtr { acts.baseAddress! + o }

    /// Output (B, T, D) of block `l` (0-based) from the last forward. For the BD3 layout the last block's x_0
    /// rows are not computed (only their K, V are needed), so only its x_t half is meaningful.
    public func blockOutput(_ l: Int) -> UnsafeBufferPointer<Float> {
        let (B, T) = (last!.batch, last!.T)
        return UnsafeBufferPointer(start: A(aResid[l + 1]), count: B * T * config.hiddenSize)
    }
    /// Residual stream i from the last forward: 0 = embedding output, l + 1 = output of block l. (B, T, D)
    public func residualStream(_ i: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: A(aResid[i]), count: last!.batch * last!.T * config.hiddenSize)
    }
    /// Final-layer adaLN output (nc, 2D) = [shift, scale] from the last forward (diffusion models only).
    public var finalModulation: UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: A(aModF), count: last!.nCond * 2 * config.hiddenSize)
    }
    /// adaLN output (nc, 6D) of block `l` (chunks sh1,sc1,g1,sh2,sc2,g2) from the last forward.
    public func modulation(_ l: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: A(aBlocks[l].mod), count: last!.nCond * 6 * config.hiddenSize)
    }
    /// c = silu(sigma_map(...)) (nc, cond) from the last forward.
    public var condition: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: A(aC), count: last!.nCond * config.condDim) }

    /// Number of logit rows per sequence for a layout and input length T.
    public func outputLength(layout: AttentionLayout, tokensPerSequence T: Int) -> Int {
        switch layout {
        case .blockDiffusion: return T / 2
        case .blockCausal(let bs): return min(bs, T)
        default: return T
        }
    }

    // MARK: Init

    /// Reference init: embedding and every Linear weight/bias U(±1/√fan_in) (kaiming_uniform a=√5),
    /// adaLN layers and the output linear zero, LayerNorm weights 1. Deterministic in `seed`.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for t in tensors {
            let dst = P(t.offset)
            let n = t.count
            let name = t.name
            if name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name.hasSuffix("norm_final.weight") {
                dst.update(repeating: 1, count: n)
            } else if name.contains("adaLN_modulation") || name.hasPrefix("backbone.output_layer.linear") {
                dst.update(repeating: 0, count: n)
            } else {
                // fan_in: the second dimension of a weight; a bias uses its layer's weight fan_in.
                let fanIn: Int
                if t.shape.count == 2 { fanIn = t.shape[1] }
                else {
                    let wname = String(name.dropLast("bias".count)) + "weight"
                    fanIn = tensors.first(where: { $0.name == wname })!.shape[1]
                }
                let bound = 1 / Double(fanIn).squareRoot()
                for i in 0..<n { dst[i] = Float((rng.nextDouble() * 2 - 1) * bound) }
            }
        }
    }

    // MARK: Forward

    /// tokens (B, T) row-major; returns logits (B, Lout, V) (a view into the model's activation buffer).
    @discardableResult
    public func forward(tokens: UnsafeBufferPointer<Int32>, batch B: Int, layout: AttentionLayout,
                        sigma: UnsafeBufferPointer<Float>?, training: Bool, dropoutSeed: UInt64) -> UnsafeMutableBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0, "batch \(B) must be in 1...\(maxBatch) and divide the token count")
        let T = tokens.count / B
        let outerPrecision = MatmulContext.enter(precision); defer { _ = MatmulContext.enter(outerPrecision) }
        precondition(T >= 1 && T <= maxTokens, "sequence length \(T) exceeds maxTokens \(maxTokens)")
        precondition(!(weightOwner ?? self).parametersReleased, "forward on a model whose parameters were released")
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

        timed("F.embedding") { embeddingForward(A(aResid[0]), tokenCopy.baseAddress!, P(pEmbed), N, D) }
        timed("F.conditioning") { computeConditioning(batch: B, nCond: nCond, sigma: sigma) }

        let p = training ? config.dropout : 0
        for l in 0..<config.nBlocks {
            timed("F.block") {
                let s = blockActivations(l), w = blockWeights[l]
                let mod: UnsafePointer<Float>? = config.hasAdaLN ? UnsafePointer(A(aBlocks[l].mod)) : nil
                let x = A(aResid[l])
                blockAttentionInput(x: x, w: w, mod: mod, rowsPerCond: rowsPerCond, a: s, N, D)
                rotaryApply(s.qkv, positions: positions.baseAddress!, T: T, table: rotary, nHeads: H, N, inverse: false)
                attentionForward(out: s.att, lse: A(aBlocks[l].lse), qkv: s.qkv, plan: attentionPlan(l), B: B, nHeads: H, headDim: d)
                for seg in tailSegments(l, B: B, T: T, layout: layout) {
                    let (m, rpc) = segmentModulation(mod.map { FloatPtr(mutating: $0) }, seg, rowsPerCond)
                    blockAttentionOutput(out: A(aResid[l + 1]) + seg.r0 * D, x: x + seg.r0 * D, w: w, mod: m.map { UnsafePointer($0) },
                                         rowsPerCond: rpc, a: s.rows(from: seg.r0, D),
                                         dropAttn: Dropout(p: p, seed: dropoutSeed, stream: seg.stream(2 * l)),
                                         dropMLP: Dropout(p: p, seed: dropoutSeed, stream: seg.stream(2 * l + 1)),
                                         keepGeluDerivative: !isInference, seg.n, D)
                }
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
        timed("F.output") {
            normModulateForward(h: A(aHf), xhat: A(aXhatF), rstd: A(aRstdF), x: A(aXf), weight: P(pNormF),
                                shift: modF, scale: modF.map { $0 + D }, modStride: 2 * D,
                                rowsPerCond: config.timeConditioning ? lout : nOut, nOut, D)
            matmulForward(A(aLogits), A(aHf), P(pLin), P(pLinBias), nOut, D, V)
        }
        return UnsafeMutableBufferPointer(start: A(aLogits), count: nOut * V)
    }

    /// c = silu(sigma_map(timestep_embedding(sigma))) and every adaLN output, for nCond rows.
    func computeConditioning(batch B: Int, nCond: Int, sigma: UnsafeBufferPointer<Float>?) {
        let D = config.hiddenSize, C = config.condDim
        guard config.hasAdaLN else { return }
        do {
            for b in 0..<nCond {
                let s: Float
                if config.timeConditioning {
                    guard let sigma, sigma.count == B else { preconditionFailure("time conditioning needs one sigma per sequence") }
                    s = sigma[b]
                } else { s = 0 }
                timestepEmbedding(A(aFreq + b * timestepFrequencySize), s)
            }
            matmulForward(A(aT1), A(aFreq), P(pSig1), P(pSig1b), nCond, timestepFrequencySize, C)
            siluForward(A(aT1s), A(aT1), nCond * C)
            matmulForward(A(aT3), A(aT1s), P(pSig2), P(pSig2b), nCond, C, C)
            siluForward(A(aC), A(aT3), nCond * C)
            for l in 0..<config.nBlocks {
                matmulForward(A(aBlocks[l].mod), A(aC), P(pBlocks[l].ada), P(pBlocks[l].adaBias), nCond, C, 6 * D)
            }
            matmulForward(A(aModF), A(aC), P(pAdaF), P(pAdaFBias), nCond, C, 2 * D)
        }
    }

    /// Rows on which the post-attention part of block l runs. In BD3's last block the x_0 half is needed only
    /// for its K and V (nothing reads its outputs), so only each sequence's x_t rows are computed there.
    struct Segment {
        var r0: Int, n: Int, seq: Int?
        /// Dropout stream: the whole-buffer stream, or one per sequence segment (masks must not repeat).
        func stream(_ base: Int) -> UInt64 { seq.map { UInt64(base) | (UInt64($0 + 1) << 32) } ?? UInt64(base) }
    }
    func tailSegments(_ l: Int, B: Int, T: Int, layout: AttentionLayout) -> [Segment] {
        if case .blockDiffusion = layout, l == config.nBlocks - 1 {
            return (0..<B).map { Segment(r0: $0 * T, n: T / 2, seq: $0) }
        }
        return [Segment(r0: 0, n: B * T, seq: nil)]
    }
    /// Modulation pointer and rows-per-cond-row for a segment.
    func segmentModulation(_ mod: FloatPtr?, _ seg: Segment, _ rowsPerCond: Int) -> (FloatPtr?, Int) {
        guard let seq = seg.seq else { return (mod, rowsPerCond) }
        return (mod.map { $0 + (config.timeConditioning ? seq * 6 * config.hiddenSize : 0) }, seg.n)
    }
    /// The attention plan of block l: BD3's last block computes only the x_t query tiles.
    func attentionPlan(_ l: Int) -> AttentionPlan {
        guard case .blockDiffusion = plan!.layout, l == config.nBlocks - 1 else { return plan! }
        if lastBlockPlan == nil || lastBlockPlan!.layout != plan!.layout || lastBlockPlan!.T != plan!.T {
            var p = plan!
            p.tiles = p.tiles.filter { $0.q0 < p.T / 2 }
            lastBlockPlan = p
        }
        return lastBlockPlan!
    }

    func outputRowStart(_ layout: AttentionLayout, T: Int, lout: Int) -> Int {
        if case .blockCausal = layout { return T - lout }
        return 0
    }

    // MARK: Backward

    /// dLogits (B, Lout, V) → accumulates into `gradients`. Uses the activations of the last forward.
    public func backward(dLogits: UnsafeBufferPointer<Float>) {
        precondition(!isInference, "backward on an inference-only DiT (built with inference: true or sharingWeightsOf:, it has no gradient buffer); build the model with inference: false to train it")
        guard let last else { preconditionFailure("backward called before forward") }
        let outerPrecision = MatmulContext.enter(precision); defer { _ = MatmulContext.enter(outerPrecision) }
        let (B, T, layout, training, seed, nCond, lout) = last
        let D = config.hiddenSize, V = config.vocabSize, H = config.nHeads, d = config.headDim, C = config.condDim
        let N = B * T, nOut = B * lout
        precondition(dLogits.count == nOut * V, "dLogits must be (B, Lout, V) = \(nOut * V) values")
        let rowsPerCond = config.timeConditioning ? T : N
        let p = training ? config.dropout : 0
        let ada = config.hasAdaLN

        // Output layer.
        let dres = A(gResid)
        timed("B.output") {
        matmulBackward(dinp: A(gHf), dweight: G(pLin), dbias: G(pLinBias), dout: dLogits.baseAddress!, inp: A(aHf), weight: P(pLin), nOut, D, V)
        if ada { A(gModF).update(repeating: 0, count: nCond * 2 * D) }
        A(gXf).update(repeating: 0, count: nOut * D)
        normModulateBackward(dx: A(gXf), dweight: G(pNormF), dshift: ada ? A(gModF) : nil, dscale: ada ? A(gModF) + D : nil,
                             dh: A(gHf), xhat: A(aXhatF), rstd: A(aRstdF), weight: P(pNormF), scale: ada ? A(aModF) + D : nil,
                             modStride: 2 * D, rowsPerCond: config.timeConditioning ? lout : nOut, nOut, D)
        if lout != T { dres.update(repeating: 0, count: N * D) }
        let start = outputRowStart(layout, T: T, lout: lout)
        for b in 0..<B { (dres + (b * T + start) * D).update(from: A(gXf) + b * lout * D, count: lout * D) }
        if ada {
            A(gC).update(repeating: 0, count: nCond * C)
            matmulBackward(dinp: A(gC), accumulateInput: true, dweight: G(pAdaF), dbias: G(pAdaFBias), dout: A(gModF), inp: A(aC), weight: P(pAdaF), nCond, C, 2 * D)
        }
        }

        for l in stride(from: config.nBlocks - 1, through: 0, by: -1) { timed("B.block") {
            let s = aBlocks[l], w = pBlocks[l]
            let mod: FloatPtr? = ada ? A(s.mod) : nil
            let dmod: FloatPtr? = ada ? A(gMod) : nil
            if let dmod { dmod.update(repeating: 0, count: nCond * 6 * D) }
            for seg in tailSegments(l, B: B, T: T, layout: layout) {
                let (r0, n) = (seg.r0, seg.n)
                let (m, rpc) = segmentModulation(mod, seg, rowsPerCond)
                let (dm, _) = segmentModulation(dmod, seg, rowsPerCond)
                let dres = dres + r0 * D
                // MLP branch: x_{l+1} = resid2 + g2 drop(fcProj)
                gateResidualBackward(dbranch: A(gBranch) + r0 * D, dgate: dm.map { $0 + 5 * D }, dout: dres, branch: A(s.fcProj) + r0 * D,
                                     gate: m.map { $0 + 5 * D }, modStride: 6 * D, rowsPerCond: rpc,
                                     dropout: Dropout(p: p, seed: seed, stream: seg.stream(2 * l + 1)), n, D)
                matmulBackward(dinp: A(gFc) + r0 * 4 * D, dweight: G(w.proj), dbias: G(w.projBias), dout: A(gBranch) + r0 * D,
                               inp: A(s.gelu) + r0 * 4 * D, weight: P(w.proj), n, 4 * D, D)
                geluBackwardStored(A(gFc) + r0 * 4 * D, A(s.fc) + r0 * 4 * D, A(gFc) + r0 * 4 * D, n * 4 * D)
                matmulBackward(dinp: A(gTmp) + r0 * D, dweight: G(w.fc), dbias: G(w.fcBias), dout: A(gFc) + r0 * 4 * D,
                               inp: A(s.h2) + r0 * D, weight: P(w.fc), n, D, 4 * D)
                normModulateBackward(dx: dres, dweight: G(w.norm2), dshift: dm.map { $0 + 3 * D }, dscale: dm.map { $0 + 4 * D },
                                     dh: A(gTmp) + r0 * D, xhat: A(s.xhat2) + r0 * D, rstd: A(s.rstd2) + r0, weight: P(w.norm2), scale: m.map { $0 + 4 * D },
                                     modStride: 6 * D, rowsPerCond: rpc, n, D)
                // Attention branch: resid2 = x_l + g1 drop(attProj)
                gateResidualBackward(dbranch: A(gBranch) + r0 * D, dgate: dm.map { $0 + 2 * D }, dout: dres, branch: A(s.attProj) + r0 * D,
                                     gate: m.map { $0 + 2 * D }, modStride: 6 * D, rowsPerCond: rpc,
                                     dropout: Dropout(p: p, seed: seed, stream: seg.stream(2 * l)), n, D)
                matmulBackward(dinp: A(gAtt) + r0 * D, dweight: G(w.attnOut), dbias: nil, dout: A(gBranch) + r0 * D,
                               inp: A(s.att) + r0 * D, weight: P(w.attnOut), n, D, D)
            }
            let pl = attentionPlan(l)
            attentionBackward(dqkv: A(gQkv), dout: A(gAtt), out: A(s.att), lse: A(s.lse), qkv: A(s.qkv), plan: pl, B: B, nHeads: H, headDim: d)
            rotaryApply(A(gQkv), positions: positions.baseAddress!, T: T, table: rotary, nHeads: H, N, inverse: true)
            matmulBackward(dinp: A(gTmp), dweight: G(w.qkv), dbias: nil, dout: A(gQkv), inp: A(s.h1), weight: P(w.qkv), N, D, 3 * D)
            normModulateBackward(dx: dres, dweight: G(w.norm1), dshift: dmod, dscale: dmod.map { $0 + D },
                                 dh: A(gTmp), xhat: A(s.xhat1), rstd: A(s.rstd1), weight: P(w.norm1), scale: mod.map { $0 + D },
                                 modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
            if let dmod {
                matmulBackward(dinp: A(gC), accumulateInput: true, dweight: G(w.ada), dbias: G(w.adaBias), dout: dmod, inp: A(aC), weight: P(w.ada), nCond, C, 6 * D)
            }
        } }
        timed("B.embedding") { embeddingBackward(G(pEmbed), dres, tokenCopy.baseAddress!, N, D) }

        if ada { timed("B.conditioning") {
            // c = silu(t3), t3 = W2 silu(t1) + b2, t1 = W1 freq + b1
            siluBackward(A(gC), A(aT3), A(gC), nCond * C)
            matmulBackward(dinp: A(gT), dweight: G(pSig2), dbias: G(pSig2b), dout: A(gC), inp: A(aT1s), weight: P(pSig2), nCond, C, C)
            siluBackward(A(gT), A(aT1), A(gT), nCond * C)
            matmulBackward(dinp: nil, dweight: G(pSig1), dbias: G(pSig1b), dout: A(gT), inp: A(aFreq), weight: P(pSig1), nCond, timestepFrequencySize, C)
        } }
    }
}
