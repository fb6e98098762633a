import Foundation

// Reading and writing tokenizer files.
//   HF tokenizer.json — model type BPE, ByteLevel pre-tokenizer (use_regex, no prefix space) and
//     decoder; vocab keys are byte-level strings (see ByteLevel); merges as "left right" strings
//     (arrays [left, right] are read too); specials are in both `added_tokens` and the vocab, so
//     HF gives them exactly our ids.
//   tiktoken ranks — lines "base64(token) rank"; id = rank; merges derived from the ranks.
//   GPT-2 vocab.json + merges.txt.
// Imports append whatever of "<|endoftext|>" and "[MASK]" is missing (in that order) at the end
// of the vocabulary; pad = eos unless a "[PAD]" exists.

extension BPETokenizer {
    /// Loads an HF tokenizer.json holding a byte-level BPE.
    public static func load(path: String) throws -> BPETokenizer {
        let data = try readFile(path, what: "tokenizer")
        return try fromHFJSON(data, source: path, appendMissingSpecials: false)
    }

    static func readFile(_ path: String, what: String) throws -> Data {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ToolError("\(what) file \(path) does not exist")
        }
        guard !isDir.boolValue else { throw ToolError("\(what) path \(path) is a directory; give a file") }
        guard let d = FileManager.default.contents(atPath: path) else { throw ToolError("cannot read \(what) file \(path)") }
        return d
    }

    // MARK: HF tokenizer.json

    public static func fromHFJSON(_ data: Data, source: String, appendMissingSpecials: Bool) throws -> BPETokenizer {
        func bad(_ why: String) -> ToolError { ToolError("\(source): \(why)") }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw bad("not a JSON object (expected a Hugging Face tokenizer.json)")
        }
        guard let model = root["model"] as? [String: Any] else { throw bad("no \"model\" section") }
        if let type = model["type"] as? String, type != "BPE" { throw bad("model type \(type) is not supported (only byte-level BPE)") }
        guard let vocab = model["vocab"] as? [String: Any], let mergesAny = model["merges"] as? [Any] else {
            throw bad("model has no vocab/merges")
        }
        if let pre = root["pre_tokenizer"] as? [String: Any] {
            guard pre["type"] as? String == "ByteLevel" else { throw bad("pre_tokenizer must be ByteLevel (GPT-2 style)") }
            if pre["add_prefix_space"] as? Bool == true { throw bad("ByteLevel add_prefix_space=true is not supported") }
            if pre["use_regex"] as? Bool == false { throw bad("ByteLevel use_regex=false is not supported") }
        } else {
            throw bad("no ByteLevel pre_tokenizer; not a byte-level BPE tokenizer")
        }
        if let norm = root["normalizer"], !(norm is NSNull) { throw bad("normalizers are not supported") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let s = model[key] as? String, !s.isEmpty { throw bad("\(key) is not supported") }
        }
        if model["byte_fallback"] as? Bool == true { throw bad("byte_fallback is not supported") }
        if model["ignore_merges"] as? Bool == true { throw bad("ignore_merges=true is not supported") }
        var entries = [(String, Int)]()
        for (k, v) in vocab {
            guard let id = (v as? NSNumber)?.intValue else { throw bad("vocab entry \(k) has no integer id") }
            entries.append((k, id))
        }
        var specialNames = Set([endOfText, padName, maskName])
        if let added = root["added_tokens"] as? [[String: Any]] {
            for t in added {
                guard let content = t["content"] as? String, let id = (t["id"] as? NSNumber)?.intValue else { throw bad("malformed added_tokens entry") }
                specialNames.insert(content)
                if vocab[content] == nil { entries.append((content, id)) }
            }
        }
        var merges = [(String, String)]()
        for m in mergesAny {
            if let s = m as? String {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw bad("merge \"\(s)\" is not two tokens") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let a = m as? [String], a.count == 2 {
                merges.append((a[0], a[1]))
            } else { throw bad("malformed merge entry") }
        }
        return try fromVocab(entries, merges: merges, specialNames: specialNames, appendMissingSpecials: appendMissingSpecials, source: source)
    }

    /// Builds from (byte-level string, id) entries and string merges.
    static func fromVocab(_ entries: [(String, Int)], merges: [(String, String)], specialNames: Set<String>,
                          appendMissingSpecials: Bool, source: String) throws -> BPETokenizer {
        func bad(_ why: String) -> ToolError { ToolError("\(source): \(why)") }
        let n = entries.count
        var tokens = [[UInt8]?](repeating: nil, count: n)
        var specials = [BPESpecialToken]()
        var idOf = [String: Int32]()
        for (s, id) in entries {
            guard id >= 0 && id < n else { throw bad("ids are not contiguous 0..<\(n) (id \(id) for \(s))") }
            guard tokens[id] == nil else { throw bad("id \(id) is used twice") }
            if specialNames.contains(s) {
                tokens[id] = Array(s.utf8)
                specials.append(BPESpecialToken(name: s, id: Int32(id)))
            } else {
                guard let b = ByteLevel.bytes(for: s) else { throw bad("vocab entry \"\(s)\" is not a byte-level token; only byte-level BPE is supported") }
                tokens[id] = b
            }
            idOf[s] = Int32(id)
        }
        var toks = tokens.map { $0! }
        specials.sort { $0.id < $1.id }
        var pairs = [(Int32, Int32)]()
        pairs.reserveCapacity(merges.count)
        for (a, b) in merges {
            guard let x = idOf[a], let y = idOf[b] else { throw bad("merge (\(a), \(b)) uses a token missing from the vocab") }
            pairs.append((x, y))
        }
        if appendMissingSpecials {
            for name in [endOfText, maskName] where !specials.contains(where: { $0.name == name }) {
                specials.append(BPESpecialToken(name: name, id: Int32(toks.count)))
                toks.append(Array(name.utf8))
            }
        }
        return try BPETokenizer(tokens: toks, merges: pairs, specials: specials)
    }

    /// tokenizer.json text (deterministic: sorted keys).
    public func hfJSON() throws -> Data {
        var vocab = [String: Int]()
        for id in 0..<vocabSize { vocab[tokenString(Int32(id))] = id }
        let added: [[String: Any]] = specialTokens.map {
            ["id": Int($0.id), "content": $0.name, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let model: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
            "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.map { tokenString($0.left) + " " + tokenString($0.right) },
        ]
        let root: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": NSNull(), "pre_tokenizer": byteLevel, "post_processor": NSNull(),
            "decoder": byteLevel, "model": model,
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
    }

    // MARK: tiktoken

    /// tiktoken ranks file: "base64 rank" per line. Ids = ranks; a merge per multi-byte token,
    /// in rank order: the two parts that BPE with only the lower ranks leaves (tiktoken's and
    /// HF's converters do the same).
    public static func fromTiktoken(_ data: Data, source: String) throws -> BPETokenizer {
        func bad(_ why: String) -> ToolError { ToolError("\(source): \(why)") }
        guard let text = String(data: data, encoding: .utf8) else { throw bad("not a text file") }
        var byRank = [[UInt8]?]()
        var lineNo = 0
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNo += 1
            if line.isEmpty { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2, let tok = Data(base64Encoded: String(parts[0])), let rank = Int(parts[1]), rank >= 0, rank < 10_000_000 else {
                throw bad("line \(lineNo) is not \"base64 rank\"")
            }
            if rank >= byRank.count { byRank += [[UInt8]?](repeating: nil, count: rank + 1 - byRank.count) }
            guard byRank[rank] == nil else { throw bad("rank \(rank) appears twice") }
            guard !tok.isEmpty else { throw bad("line \(lineNo) has an empty token") }
            byRank[rank] = Array(tok)
        }
        guard !byRank.isEmpty else { throw bad("no ranks found") }
        guard !byRank.contains(where: { $0 == nil }) else { throw bad("ranks are not contiguous 0..<\(byRank.count)") }
        // A ranks file carries no pre-tokenizer pattern. Ours is GPT-2's, which r50k_base (gpt2, 50256 ranks) and
        // p50k_base (50280) use; cl100k_base (100256) and o200k_base split text with other patterns, so importing them
        // would silently give other ids than tiktoken does.
        guard byRank.count <= 50_280 else {
            throw bad("\(byRank.count) ranks: a tiktoken vocabulary of that size (cl100k_base, o200k_base) pre-tokenizes with another pattern than GPT-2's, which this tokenizer implements, so its ids would differ from tiktoken's; import gpt2.tiktoken (r50k/p50k) or GPT-2's tokenizer.json (--hf), or train one (tokenize train)")
        }
        let tokens = byRank.map { $0! }
        var table = ByteStringTable(capacity: tokens.count)
        for t in tokens {
            let (_, inserted) = t.withUnsafeBufferPointer { table.insert($0.baseAddress!, $0.count, hash: hashBytes($0.baseAddress!, $0.count)) }
            guard inserted else { throw bad("a token appears twice") }
        }
        func rank(_ b: ArraySlice<UInt8>) -> Int {
            b.withUnsafeBufferPointer { table.find($0.baseAddress!, $0.count, hash: hashBytes($0.baseAddress!, $0.count)) }
        }
        var merges = [(Int32, Int32)]()
        for (r, t) in tokens.enumerated() where t.count > 1 {
            // BPE of t using ranks < r: parts as ranges into t.
            var cuts = Array(0...t.count)   // part k = t[cuts[k]..<cuts[k+1]]
            while cuts.count > 2 {
                var best = Int.max, at = -1
                for k in 0..<(cuts.count - 2) {
                    let q = rank(t[cuts[k]..<cuts[k + 2]])
                    if q >= 0 && q < r && q < best { best = q; at = k }
                }
                if at < 0 { break }
                cuts.remove(at: at + 1)
            }
            guard cuts.count == 3 else { throw bad("token of rank \(r) cannot be built from two lower-ranked tokens") }
            merges.append((Int32(rank(t[cuts[0]..<cuts[1]])), Int32(rank(t[cuts[1]..<cuts[2]]))))
        }
        let specials = [BPESpecialToken(name: endOfText, id: Int32(tokens.count)),
                        BPESpecialToken(name: maskName, id: Int32(tokens.count + 1))]
        return try BPETokenizer(tokens: tokens + specials.map { Array($0.name.utf8) }, merges: merges, specials: specials)
    }

    // MARK: vocab.json + merges.txt

    public static func fromVocabAndMerges(vocab vocabData: Data, merges mergesData: Data, source: String) throws -> BPETokenizer {
        func bad(_ why: String) -> ToolError { ToolError("\(source): \(why)") }
        guard let vocab = (try? JSONSerialization.jsonObject(with: vocabData)) as? [String: Any] else { throw bad("vocab.json is not a JSON object") }
        var entries = [(String, Int)]()
        for (k, v) in vocab {
            guard let id = (v as? NSNumber)?.intValue else { throw bad("vocab entry \(k) has no integer id") }
            entries.append((k, id))
        }
        guard let text = String(data: mergesData, encoding: .utf8) else { throw bad("merges.txt is not UTF-8") }
        var merges = [(String, String)]()
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if i == 0 && line.hasPrefix("#version") { continue }
            let l = line.hasSuffix("\r") ? line.dropLast() : line
            let parts = l.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw bad("merges.txt line \(i + 1) is not two tokens") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        return try fromVocab(entries, merges: merges, specialNames: [endOfText, padName, maskName],
                             appendMissingSpecials: true, source: source)
    }
}
