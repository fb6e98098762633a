// The one way every tool opens a checkpoint: `Checkpoint.open(path, overrides:)` recognises the layout,
// reads every fact into a fully validated `CheckpointInfo`, checks each tensor's name, dtype and shape against
// the model the facts describe — all before any model memory is allocated — and then loads the weights
// (finite values only) into a model sized by the caller.
//
// Layouts:
//   ours            a safetensors file written by `train` (or the converter): facts in `__metadata__`
//   Hugging Face    a directory from `BD3LM.save_pretrained`: config.json (model_type bd3lm | mdlm | ar, block_size,
//                   vocab_size, model_length, hidden_dim, cond_dim, n_blocks, n_heads, time_conditioning, var_min,
//                   sampling_eps_min/max, cross_attn, adaln, causal) + model.safetensors or the sharded
//                   model-0000x-of-0000y.safetensors with model.safetensors.index.json
//   reference state_dict   a safetensors file with the DiT's names (bare, or `backbone.*` as in the Lightning
//                   module's state_dict): facts from a config.json beside it, else from --algo/--block-size/--config/
//                   --set; sizes the tensor shapes determine are read from them
//   .ckpt           (a zip: a torch pickle) refused with the converter's command — never unpickled here
// What cannot be known is asked for with the option that gives it, never guessed.
import Foundation

/// Sane bounds checked before anything is sized from a config (a corrupt size must not allocate 51 GB).
public enum CheckpointLimits {
    public static let vocab = 1 << 24, hidden = 1 << 15, blocks = 1024, cond = 1 << 15, length = 1 << 20

    static func check(_ c: ModelConfig, path: String, key: String) throws {
        func bad(_ what: String) -> ToolError { ToolError("\(path): \(key): \(what); the checkpoint is corrupt or not a DiT checkpoint") }
        guard (2...vocab).contains(c.vocabSize) else { throw bad("vocabulary size \(c.vocabSize) outside 2…\(vocab)") }
        guard (1...hidden).contains(c.hiddenSize) else { throw bad("hidden size \(c.hiddenSize) outside 1…\(hidden)") }
        guard (1...blocks).contains(c.nBlocks) else { throw bad("block count \(c.nBlocks) outside 1…\(blocks)") }
        guard (1...c.hiddenSize).contains(c.nHeads) else { throw bad("head count \(c.nHeads) outside 1…\(c.hiddenSize)") }
        guard (1...cond).contains(c.condDim) else { throw bad("cond dim \(c.condDim) outside 1…\(cond)") }
        guard (1...length).contains(c.length) else { throw bad("length \(c.length) outside 1…\(length)") }
        do { try c.validate() } catch { throw bad("\(error)") }
    }
}

extension ModelConfig {
    /// The reference state_dict of this config (names with `backbone.`, shapes) in the DiT's parameter order,
    /// without allocating the model (equal to `DiT.tensors`; checked by the tests).
    public var parameterShapes: [(name: String, shape: [Int])] {
        let V = vocabSize, D = hiddenSize, C = condDim
        var t: [(String, [Int])] = [("vocab_embed.embedding", [V, D])]
        if hasAdaLN {
            t += [("sigma_map.mlp.0.weight", [C, 256]), ("sigma_map.mlp.0.bias", [C]),
                  ("sigma_map.mlp.2.weight", [C, C]), ("sigma_map.mlp.2.bias", [C])]
        }
        for i in 0..<nBlocks {
            t += [("blocks.\(i).norm1.weight", [D]), ("blocks.\(i).attn_qkv.weight", [3 * D, D]), ("blocks.\(i).attn_out.weight", [D, D]),
                  ("blocks.\(i).norm2.weight", [D]), ("blocks.\(i).mlp.0.weight", [4 * D, D]), ("blocks.\(i).mlp.0.bias", [4 * D]),
                  ("blocks.\(i).mlp.2.weight", [D, 4 * D]), ("blocks.\(i).mlp.2.bias", [D])]
            if hasAdaLN { t += [("blocks.\(i).adaLN_modulation.weight", [6 * D, C]), ("blocks.\(i).adaLN_modulation.bias", [6 * D])] }
        }
        t += [("output_layer.norm_final.weight", [D]), ("output_layer.linear.weight", [V, D]), ("output_layer.linear.bias", [V])]
        if hasAdaLN { t += [("output_layer.adaLN_modulation.weight", [2 * D, C]), ("output_layer.adaLN_modulation.bias", [2 * D])] }
        return t.map { ("backbone." + $0.0, $0.1) }
    }
}

public final class Checkpoint {
    public enum Layout: String, Sendable { case ours, huggingFace = "hugging-face", stateDict = "state-dict" }

    /// What the user named (file or directory).
    public let path: String
    public let layout: Layout
    public let info: CheckpointInfo
    /// Where each parameter (reference name with `backbone.`) is stored: file and stored name.
    let locations: [String: (file: SafetensorsFile, name: String)]

    /// The converter a `.ckpt` is refused with (shipped in the repository).
    public static let converter = "pipelines/convert/lightning_to_safetensors.py"

    init(path: String, layout: Layout, info: CheckpointInfo, locations: [String: (file: SafetensorsFile, name: String)]) {
        self.path = path; self.layout = layout; self.info = info; self.locations = locations
    }

    /// Opens and validates `path` (see the layouts above). Runtime problems throw `ToolError` naming the file,
    /// the key and the fix; contradictory options throw `UsageError`.
    public static func open(_ path: String, overrides o: CheckpointOverrides = .init()) throws -> Checkpoint {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ToolError("checkpoint \(path) does not exist; give a safetensors file or a Hugging Face model directory")
        }
        if isDir.boolValue { return try openDirectory(path, overrides: o) }
        if let h = FileHandle(forReadingAtPath: path) {
            let head = [UInt8](h.readData(ofLength: 4))
            try? h.close()
            if head == [0x50, 0x4B, 0x03, 0x04] {
                let out = ((path as NSString).deletingPathExtension) + ".safetensors"
                throw ToolError("\(path) is a torch pickle (.ckpt zip), which is never unpickled here; convert it (EMA weights) with: python3 \(converter) \(path) \(out)  (needs torch; add --block-size/--n-heads/--length if it asks)")
            }
        }
        let file = try read(path)
        if file.metadata["model_config"] != nil {
            try CheckpointDigest.verify(file)
            let info = try withScalarInterval(CheckpointInfo.read(file, overrides: o), file)
            let loc = try locate([file], config: info.config, path: path)
            return Checkpoint(path: path, layout: .ours, info: info, locations: loc)
        }
        let beside = ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("config.json")
        let hf = FileManager.default.fileExists(atPath: beside) ? try HFConfig.read(beside) : nil
        return try openStateDict(path, files: [file], hf: hf, overrides: o, layout: hf == nil ? .stateDict : .huggingFace)
    }

    /// A file of ours without the `sampling_eps_*` metadata keys takes the interval from the reference's scalar buffers.
    static func withScalarInterval(_ info: CheckpointInfo, _ file: SafetensorsFile) throws -> CheckpointInfo {
        guard info.metadata["sampling_eps_min"] == nil, let a = file.entry("sampling_eps_min"), let b = file.entry("sampling_eps_max"),
              a.count == 1, b.count == 1, a.isFloat, b.isFloat else { return info }
        let lo = Double(try file.floats(a.name)[0]), hi = Double(try file.floats(b.name)[0])
        guard lo.isFinite, hi.isFinite, lo >= 0, hi >= lo, hi <= 2 else {
            throw ToolError("\(file.path): sampling_eps_min/max tensors (\(lo), \(hi)) are not an interval in [0, 1]; the checkpoint is corrupt")
        }
        var i = info
        i.interval = ClipInterval(lo, hi)
        return i
    }

    static func read(_ path: String) throws -> SafetensorsFile {
        do { return try SafetensorsFile(path: path) } catch let e as ModelError { throw ToolError(e.description) }
    }

    /// An HF directory: config.json plus model.safetensors or the shards of model.safetensors.index.json; a directory
    /// holding one of our files (a run directory) is named with the file instead.
    static func openDirectory(_ dir: String, overrides o: CheckpointOverrides) throws -> Checkpoint {
        let fm = FileManager.default
        func p(_ n: String) -> String { (dir as NSString).appendingPathComponent(n) }
        guard fm.fileExists(atPath: p("config.json")) else {
            if fm.fileExists(atPath: p("best.safetensors")) || fm.fileExists(atPath: p("last.safetensors")) {
                throw ToolError("\(dir) is a run directory; name the weights file: \(p(fm.fileExists(atPath: p("best.safetensors")) ? "best.safetensors" : "last.safetensors"))")
            }
            throw ToolError("\(dir): a directory without config.json; give a Hugging Face model directory (config.json + model.safetensors) or a safetensors file")
        }
        let hf = try HFConfig.read(p("config.json"))
        var files: [SafetensorsFile] = []
        if fm.fileExists(atPath: p("model.safetensors")) {
            files = [try read(p("model.safetensors"))]
            // Our HF export keeps the toolkit's metadata (tokenizer fingerprint, special ids): read it as ours.
            if files[0].metadata["model_config"] != nil {
                try CheckpointDigest.verify(files[0])
                let info = try withScalarInterval(CheckpointInfo.read(files[0], overrides: o), files[0])
                return Checkpoint(path: dir, layout: .ours, info: info, locations: try locate(files, config: info.config, path: dir))
            }
        } else if fm.fileExists(atPath: p("model.safetensors.index.json")) {
            let ip = p("model.safetensors.index.json")
            guard let d = fm.contents(atPath: ip), let j = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any],
                  let map = j["weight_map"] as? [String: String] else {
                throw ToolError("\(ip): key 'weight_map' missing or not an object of tensor → file; download the index again")
            }
            let shards = Set(map.values).sorted()
            guard !shards.isEmpty, shards.count <= 10_000 else { throw ToolError("\(ip): key 'weight_map' names \(shards.count) shards") }
            for s in shards {
                guard !s.contains("/"), !s.hasPrefix(".") else { throw ToolError("\(ip): key 'weight_map' names the file '\(s)' outside the directory") }
                guard fm.fileExists(atPath: p(s)) else { throw ToolError("\(ip): shard \(s) is missing; download it again") }
                let f = try read(p(s))
                for (name, shard) in map where shard == s && f.entry(name) == nil {
                    throw ToolError("\(p(s)): tensor \(name) listed in the index is missing; download the shard again")
                }
                files.append(f)
            }
        } else {
            throw ToolError("\(dir): config.json without model.safetensors or model.safetensors.index.json; download the weights (huggingface-cli download …)")
        }
        return try openStateDict(dir, files: files, hf: hf, overrides: o, layout: .huggingFace)
    }

    /// A reference state_dict (HF, Lightning names or bare DIT): sizes from the shapes, the rest from config.json or
    /// the overrides.
    static func openStateDict(_ path: String, files: [SafetensorsFile], hf: HFConfig?, overrides o: CheckpointOverrides,
                              layout: Layout) throws -> Checkpoint {
        // Stored names → reference names: `_orig_mod.` (torch.compile) dropped, bare DIT names get `backbone.`.
        var byName: [String: (file: SafetensorsFile, name: String)] = [:]
        let bare = !files.contains { f in f.names.contains { $0.hasPrefix("backbone.") || $0.hasPrefix("_orig_mod.backbone.") } }
        var scalars: [String: Float] = [:]
        for f in files {
            for stored in f.names {
                var n = stored
                while n.hasPrefix("_orig_mod.") { n.removeFirst("_orig_mod.".count) }
                n = n.replacingOccurrences(of: "._orig_mod.", with: ".")
                if n == "sampling_eps_min" || n == "sampling_eps_max" {
                    let e = f.entry(stored)!
                    guard e.count == 1, e.isFloat else { throw ToolError("\(f.path): \(n) must be one float, is \(e.dtype) \(e.shape)") }
                    let v = try f.floats(stored)[0]
                    guard v.isFinite, v >= 0, v <= 2 else { throw ToolError("\(f.path): \(n) = \(v) is not a clip bound in [0, 1]; the checkpoint is corrupt") }
                    scalars[n] = v
                    continue
                }
                if bare { n = "backbone." + n }
                guard byName[n] == nil else { throw ToolError("\(f.path): tensor \(n) is stored twice; the checkpoint is corrupt") }
                byName[n] = (f, stored)
            }
        }
        func shape(_ n: String) -> [Int]? { byName[n].flatMap { $0.file.entry($0.name)?.shape } }
        guard let emb = shape("backbone.vocab_embed.embedding"), emb.count == 2 else {
            throw ToolError("\(path): no vocab_embed.embedding tensor; not a DiT checkpoint (model.safetensors of kuleshov-group/bd3lm-*, mdlm-owt, or a DIT state_dict)")
        }
        var nBlocks = 0
        while shape("backbone.blocks.\(nBlocks).attn_qkv.weight") != nil && nBlocks <= CheckpointLimits.blocks { nBlocks += 1 }
        let sigma = shape("backbone.sigma_map.mlp.0.weight")
        let adaLN = shape("backbone.blocks.0.adaLN_modulation.weight") != nil
        guard (sigma != nil) == adaLN else { throw ToolError("\(path): sigma_map and adaLN_modulation tensors must come together; the state_dict is incomplete") }
        let shapesCausal = !adaLN
        let src = hf.map { "\($0.path)" } ?? "the options"

        // Facts: config.json, else the overrides (named config, --set), else what shapes determine.
        func size(_ key: String, hfValue: Int?, fromShapes: Int?) throws -> Int {
            let given = o.sets[key] ?? hfValue ?? o.named(key, vocabSize: emb[0])
            if let s = fromShapes {
                if let g = given, g != s { throw ToolError("\(path): \(key) = \(g) from \(src) contradicts the tensor shapes (\(s)); fix config.json or drop the option") }
                return s
            }
            guard let g = given else {
                throw ToolError("\(path): the \(key) is not stored in a state_dict; give it with --set \(key)=N or --config tiny|small|cpu (the OWT models: small, n_heads 12, length 1024)")
            }
            return g
        }
        let V = try size("vocab_size", hfValue: hf?.vocabSize, fromShapes: emb[0])
        let D = try size("hidden_size", hfValue: hf?.hiddenDim, fromShapes: emb[1])
        let nb = try size("n_blocks", hfValue: hf?.nBlocks, fromShapes: nBlocks)
        let C = shapesCausal ? (o.sets["cond_dim"] ?? hf?.condDim ?? 128) : try size("cond_dim", hfValue: hf?.condDim, fromShapes: sigma?[0])
        let H = try size("n_heads", hfValue: hf?.nHeads, fromShapes: nil)
        let L = try size("length", hfValue: hf?.modelLength, fromShapes: nil)

        // Algorithm: config.json's model_type/causal/time_conditioning/cross_attn, else --algo; AR is read from shapes.
        var algo: Algorithm
        if let h = hf {
            algo = try h.algorithm()
            if let x = o.algorithm, x != algo, !o.forWeights { throw UsageError("--algo \(x.rawValue) contradicts \(h.path) (\(algo.rawValue)); drop --algo") }
        } else if shapesCausal {
            algo = .ar
            if let x = o.algorithm, x != .ar, !o.forWeights { throw UsageError("--algo \(x.rawValue) contradicts \(path): it has no adaLN/sigma_map, an AR model") }
        } else if let x = o.algorithm, x != .ar || !o.forWeights {
            algo = x
            guard x != .ar else { throw UsageError("--algo ar contradicts \(path): it has adaLN/sigma_map tensors, a diffusion model") }
        } else if scalars["sampling_eps_min"] != nil || o.forWeights {
            algo = .bd3   // only bd3lm (algo.var_min) has the clip buffers
        } else {
            throw ToolError("\(path): the algorithm of a diffusion state_dict is not stored; give it with --algo bd3|mdlm|sedd")
        }
        guard (algo == .ar) == shapesCausal else {
            throw ToolError("\(path): \(src) says \(algo.rawValue) but the tensors are those of \(shapesCausal ? "an AR model (no adaLN)" : "a diffusion model (adaLN)")")
        }
        let config = ModelConfig(vocabSize: V, hiddenSize: D, nBlocks: nb, nHeads: H, condDim: C, length: L,
                                 dropout: Float(hf?.dropout ?? 0.1), causal: algo == .ar, timeConditioning: algo == .sedd)
        try CheckpointLimits.check(config, path: path, key: hf == nil ? "sizes" : "config.json")

        let bs: Int
        switch algo {
        case .ar: bs = 1
        case .mdlm, .sedd: bs = L
        case .bd3:
            guard let b = hf?.blockSize ?? o.blockSize ?? (o.forWeights ? L : nil) else {
                throw ToolError("\(path): the block size L' it was trained with is not stored\(hf == nil ? "" : " (config.json has no block_size)"); give it with --block-size N (kuleshov-group/bd3lm-owt-block_sizeN: N)")
            }
            bs = b
        }
        guard bs >= 1, bs <= L, L % bs == 0 else { throw ToolError("\(path): block_size \(bs) must be ≥ 1 and divide the model length \(L); fix config.json or --block-size") }

        // Special ids: the reference's mask is V−1 (appended after the tokenizer's ids); the GPT-2 pairing of the
        // official models (V = 50258) fixes BOS = EOS = 50256. Anything else is given with --set.
        var special = SpecialTokens(bos: -1, eos: -1, mask: Int32(V - 1), pad: -1)
        if V == 50258 { special = SpecialTokens(bos: 50256, eos: 50256, mask: 50257, pad: 50256) }
        for (key, kp) in [("bos_id", \SpecialTokens.bos), ("eos_id", \SpecialTokens.eos), ("mask_id", \SpecialTokens.mask), ("pad_id", \SpecialTokens.pad)] {
            if let v = o.sets[key] {
                guard v < V else { throw UsageError("--set \(key)=\(v) is outside the vocabulary of \(V)") }
                special[keyPath: kp] = Int32(v)
            }
        }
        var lo = 1e-3, hi = 1.0
        if let a = scalars["sampling_eps_min"], let b = scalars["sampling_eps_max"] { lo = Double(a); hi = Double(b) }
        else if let h = hf, h.varMin, let a = h.epsMin, let b = h.epsMax { lo = a; hi = b }
        guard hi >= lo else { throw ToolError("\(path): sampling_eps_min \(lo) > sampling_eps_max \(hi); the checkpoint is corrupt") }
        var meta = ["algo": algo.rawValue, "block_size": "\(bs)", "seq_len": "\(L)", "source": layout.rawValue]
        if algo == .sedd { meta["sedd_noise"] = "bd3lms" }   // the reference's SEDD σ(t)
        let info = CheckpointInfo(config: config, algorithm: algo, blockSize: bs, length: L, vocabSize: V, special: special,
                                  fingerprint: 0, interval: ClipInterval(lo, hi), schedule: "loglinear", step: 0, metadata: meta)
        let loc = try locate(byName: byName, config: config, path: path)
        return Checkpoint(path: path, layout: layout, info: info, locations: loc)
    }

    static func locate(_ files: [SafetensorsFile], config: ModelConfig, path: String) throws -> [String: (file: SafetensorsFile, name: String)] {
        var byName: [String: (file: SafetensorsFile, name: String)] = [:]
        for f in files {
            for stored in f.names {
                var n = stored
                while n.hasPrefix("_orig_mod.") { n.removeFirst("_orig_mod.".count) }
                n = n.replacingOccurrences(of: "._orig_mod.", with: ".")
                if n == "sampling_eps_min" || n == "sampling_eps_max" { continue }
                guard byName[n] == nil else { throw ToolError("\(f.path): tensor \(n) is stored twice; the checkpoint is corrupt") }
                byName[n] = (f, stored)
            }
        }
        return try locate(byName: byName, config: config, path: path)
    }

    /// Every parameter present with its exact shape and a float dtype, the rotary table right, nothing unknown.
    static func locate(byName: [String: (file: SafetensorsFile, name: String)], config: ModelConfig, path: String) throws -> [String: (file: SafetensorsFile, name: String)] {
        var out: [String: (file: SafetensorsFile, name: String)] = [:]
        var missing: [String] = []
        for (name, shape) in config.parameterShapes {
            guard let l = byName[name] else { missing.append(name); continue }
            let e = l.file.entry(l.name)!
            guard e.shape == shape else {
                throw ToolError("\(l.file.path): tensor \(name) has shape \(e.shape), the model config expects \(shape); the config and the weights disagree (check config.json / --set)")
            }
            guard e.isFloat else { throw ToolError("\(l.file.path): tensor \(name) has dtype \(e.dtype); weights must be F32, F16, BF16 or F64") }
            out[name] = l
        }
        if !missing.isEmpty {
            throw ToolError("\(path): missing \(missing.count) parameter tensor(s) (\(missing.prefix(3).joined(separator: ", "))\(missing.count > 3 ? ", …" : "")); is it a checkpoint of this model type (AR vs diffusion) and size?")
        }
        for (name, l) in byName where out[name] == nil {
            if name == DiT.invFreqName {
                let v = try l.file.floats(l.name)
                let ref = RotaryTable.invFreq(headDim: config.headDim)
                // Stored at the file's precision (a bf16 export rounds it to 8 bits); the model computes its own table.
                let dt = l.file.entry(l.name)!.dtype
                let tol: Float = dt == "BF16" ? 8e-3 : (dt == "F16" ? 1e-3 : 1e-6)
                guard v.count == ref.count, zip(v, ref).allSatisfy({ abs($0 - $1) <= tol * max(1e-3, abs($1)) }) else {
                    throw ToolError("\(l.file.path): rotary inv_freq does not match head dim \(config.headDim) (n_heads \(config.nHeads)); fix n_heads in config.json or --set n_heads")
                }
                continue
            }
            throw ToolError("\(l.file.path): unexpected tensor \(name) \(l.file.entry(l.name)!.shape) that the model does not have; not a DiT checkpoint of this size")
        }
        return out
    }

    public var config: ModelConfig { info.config }

    /// Copies the weights into `model` (whose sizes must be this checkpoint's; its length may differ).
    /// `each`: called after every tensor is in place, in the model's parameter order (the bf16 load converts and
    /// releases each matrix there, before the next one is read).
    public func load(into model: DiT, each: ((ParameterTensor) throws -> Void)? = nil) throws {
        let c = model.config, k = info.config
        guard c.vocabSize == k.vocabSize, c.hiddenSize == k.hiddenSize, c.nBlocks == k.nBlocks, c.nHeads == k.nHeads,
              c.condDim == k.condDim, c.causal == k.causal else {
            throw ToolError("\(path): its model size differs from this run's; pass the same --config/--set as when it was trained")
        }
        for t in model.tensors {
            guard let l = locations[t.name] else { throw ToolError("\(path): no tensor \(t.name)") }
            do {
                try l.file.weights(l.name, into: UnsafeMutableBufferPointer(rebasing: model.parameters[t.offset..<(t.offset + t.count)]))
            } catch let e as ModelError { throw ToolError(e.description) }
            try each?(t)
        }
    }

    /// A model of this checkpoint's sizes (length `length`, default the checkpoint's) with its weights.
    public func model(maxBatch: Int, maxTokens: Int, maxOutputTokens: Int? = nil, inference: Bool = true, length: Int? = nil,
                      each: ((DiT, ParameterTensor) throws -> Void)? = nil) throws -> DiT {
        var c = info.config
        if let length { c.length = length }
        let m = DiT(config: c, maxBatch: maxBatch, maxTokens: maxTokens, maxOutputTokens: maxOutputTokens, inference: inference)
        try load(into: m, each: each.map { f in { try f(m, $0) } })
        return m
    }
}

/// The fields of the reference's Hugging Face config.json (BD3LMConfig; the MDLM and AR configs use the same keys).
struct HFConfig {
    let path: String
    let modelType: String
    var blockSize: Int?, vocabSize: Int?, modelLength: Int?, hiddenDim: Int?, condDim: Int?, nBlocks: Int?, nHeads: Int?
    var dropout: Double?, epsMin: Double?, epsMax: Double?
    var timeConditioning = false, varMin = false, crossAttn: Bool?, adaln: Bool?, causal = false

    static func read(_ path: String) throws -> HFConfig {
        guard let d = FileManager.default.contents(atPath: path) else { throw ToolError("\(path): unreadable") }
        guard let j = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
            throw ToolError("\(path): not a JSON object; download config.json again")
        }
        func int(_ k: String) throws -> Int? {
            guard let v = j[k] else { return nil }
            guard let n = v as? NSNumber, let i = Int(exactly: n.doubleValue), i >= 0 else { throw ToolError("\(path): key '\(k)' is not a whole number ≥ 0; fix config.json") }
            return i
        }
        func dbl(_ k: String) throws -> Double? {
            guard let v = j[k], !(v is NSNull) else { return nil }
            guard let n = v as? NSNumber, n.doubleValue.isFinite else { throw ToolError("\(path): key '\(k)' is not a finite number; fix config.json") }
            return n.doubleValue
        }
        func bool(_ k: String) throws -> Bool? {
            guard let v = j[k] else { return nil }
            guard let b = v as? Bool else { throw ToolError("\(path): key '\(k)' is not true/false; fix config.json") }
            return b
        }
        guard let mt = j["model_type"] as? String else { throw ToolError("\(path): key 'model_type' missing; expected bd3lm, mdlm or ar") }
        guard ["bd3lm", "mdlm", "ar"].contains(mt) else {
            throw ToolError("\(path): key 'model_type' is '\(mt.prefix(40))'; this toolkit opens bd3lm, mdlm and ar (DiT) models")
        }
        var c = HFConfig(path: path, modelType: mt)
        c.blockSize = try int("block_size"); c.vocabSize = try int("vocab_size"); c.modelLength = try int("model_length")
        c.hiddenDim = try int("hidden_dim"); c.condDim = try int("cond_dim"); c.nBlocks = try int("n_blocks"); c.nHeads = try int("n_heads")
        c.dropout = try dbl("dropout"); c.epsMin = try dbl("sampling_eps_min"); c.epsMax = try dbl("sampling_eps_max")
        c.timeConditioning = try bool("time_conditioning") ?? false; c.varMin = try bool("var_min") ?? false
        c.crossAttn = try bool("cross_attn"); c.adaln = try bool("adaln"); c.causal = try bool("causal") ?? (mt == "ar")
        if let dr = c.dropout, !(0..<1).contains(dr) { throw ToolError("\(path): key 'dropout' (\(dr)) must be in [0, 1)") }
        return c
    }

    func algorithm() throws -> Algorithm {
        if causal || modelType == "ar" {
            if adaln == true { throw ToolError("\(path): key 'adaln' is true for a causal model; an AR DiT with adaLN is not supported") }
            return .ar
        }
        if adaln == false { throw ToolError("\(path): key 'adaln' is false for a diffusion model; not supported (the reference's diffusion DiTs use adaLN)") }
        if timeConditioning { return .sedd }
        if modelType == "mdlm" || crossAttn == false { return .mdlm }
        return .bd3
    }
}
