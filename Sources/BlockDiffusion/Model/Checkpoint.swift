// DiT weights ⇄ safetensors under the reference state_dict names.
//   save: every parameter (F32), `backbone.rotary_emb.inv_freq` (d/2,), extra scalar buffers
//         (e.g. `sampling_eps_min`, `sampling_eps_max`, shape ()), string metadata.
//   load: strips a `_orig_mod.` prefix (torch.compile); requires every parameter with its exact shape;
//         `inv_freq` is optional and verified when present; scalar (shape () or (1,)) tensors that are not
//         parameters are returned as extra scalars; any other unknown tensor is an error.
import Foundation

extension DiT {
    public static let invFreqName = "backbone.rotary_emb.inv_freq"

    public func save(safetensors path: String, metadata: [String: String] = [:], extraScalars: [String: Float] = [:]) throws {
        try safetensorsWriter(extraScalars: extraScalars).write(path: path, metadata: checkpointMetadata(metadata))
    }

    /// `metadata` with `format` and `model_config` (sorted JSON) added when missing.
    public func checkpointMetadata(_ metadata: [String: String]) -> [String: String] {
        var meta = metadata
        if meta["format"] == nil { meta["format"] = "pt" }
        if meta["model_config"] == nil { meta["model_config"] = config.json }
        return meta
    }

    /// Every parameter (F32), the rotary table and the extra scalars, ready to write.
    public func safetensorsWriter(extraScalars: [String: Float] = [:]) -> SafetensorsWriter {
        var w = SafetensorsWriter()
        for t in tensors {
            w.add(name: t.name, shape: t.shape,
                  floats: UnsafeBufferPointer(rebasing: parameters[t.offset..<(t.offset + t.count)]))
        }
        let inv = RotaryTable.invFreq(headDim: config.headDim)
        w.add(name: DiT.invFreqName, shape: [inv.count], floats: inv)
        for k in extraScalars.keys.sorted() { w.add(name: k, shape: [], floats: [extraScalars[k]!]) }
        return w
    }

    /// Loads parameters; returns the extra scalar buffers found (e.g. sampling_eps_min/max).
    @discardableResult
    public func load(safetensors path: String) throws -> [String: Float] {
        try load(file: SafetensorsFile(path: path))
    }

    /// `ignoreUnknown`: skip tensors that are not parameters (e.g. fixture files that also hold inputs).
    @discardableResult
    public func load(file: SafetensorsFile, ignoreUnknown: Bool = false) throws -> [String: Float] {
        var byName: [String: String] = [:]   // stripped name -> stored name
        for stored in file.names {
            var n = stored
            while n.hasPrefix("_orig_mod.") { n.removeFirst("_orig_mod.".count) }
            n = n.replacingOccurrences(of: "._orig_mod.", with: ".")
            if byName[n] != nil { throw ModelError("\(file.path): tensor \(n) appears twice (with and without _orig_mod.)") }
            byName[n] = stored
        }
        var missing: [String] = []
        for t in tensors {
            guard let stored = byName[t.name] else { missing.append(t.name); continue }
            let e = file.entry(stored)!
            // Accept (n,) vs () only for identical element counts; shapes must otherwise match exactly.
            guard e.shape == t.shape else {
                throw ModelError("\(file.path): \(t.name) has shape \(e.shape), the model config expects \(t.shape); check the model size options")
            }
            let values = try file.floats(stored)
            for i in 0..<t.count { parameters[t.offset + i] = values[i] }
        }
        if !missing.isEmpty {
            let list = missing.prefix(5).joined(separator: ", ")
            throw ModelError("\(file.path): missing \(missing.count) parameter tensor(s) (\(list)\(missing.count > 5 ? ", …" : "")); is it a checkpoint of this model type (AR vs diffusion)?")
        }
        let known = Set(tensors.map(\.name))
        var extras: [String: Float] = [:]
        for (name, stored) in byName where !known.contains(name) {
            let e = file.entry(stored)!
            if name == DiT.invFreqName {
                let v = try file.floats(stored)
                let ref = RotaryTable.invFreq(headDim: config.headDim)
                guard v.count == ref.count, zip(v, ref).allSatisfy({ abs($0 - $1) <= 1e-6 * max(1, abs($1)) }) else {
                    throw ModelError("\(file.path): rotary inv_freq does not match head dim \(config.headDim) with base 10000")
                }
            } else if e.count == 1 && e.shape.count <= 1 && !name.hasPrefix("backbone.") {
                extras[name] = try file.floats(stored)[0]
            } else if !ignoreUnknown {
                throw ModelError("\(file.path): unexpected tensor \(name) \(e.shape) not in this model")
            }
        }
        return extras
    }
}

extension ModelConfig {
    /// The config as JSON with sorted keys (checkpoint bytes are identical for identical runs).
    public var json: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self)
    }
}
