// `score merge`: one report from the reports of the `--shard i/n` runs of one `score ppl` or one `score gen`.
//
//   score ppl  the aggregate is recomputed from the shards' additive sums (NLL sum and token count, per-batch
//              variance sums and batch counts), never from averages of averages, so it equals the unsharded
//              run's report up to the order of the floating-point sums.
//   score gen  some of its metrics are no sums (the median length, the stage histories' first-seen order,
//              distinct-n: unique n-grams over ALL samples), so a shard report carries per scored sample what the
//              aggregates are made of (GenerativeShard: the score, the stream position, the tokens distinct-n
//              counted). The merge puts the samples back in order — the stream's when the shards read one stream,
//              shard by shard when each read its own part (= the parts concatenated in shard order) — and
//              recomputes the report with the unsharded run's code: Gen PPL from the per-sample NLL sums and token
//              counts, entropy, lengths, NFE, tokens per forward, order gain, repeat rate, and distinct-n from the
//              union of the samples' n-grams — the same numbers, bit for bit. The tokens are the exact form of the
//              n-gram sets, and the smaller one: one id per position where the sets of 1…4-grams take up to ten.
//
// Public API:
//   ScoreMerge.merge(_ reports:) -> PerplexityResult          score ppl shards only
//   ScoreMerge.mergeReports(_ reports:) -> MergedReport       either kind (the `score merge` command); mixed kinds refused
//   GenerativeShard                                            what a score gen shard report carries
import Foundation

/// The merged report of either kind.
public enum MergedReport {
    case ppl(PerplexityResult)
    case gen(GenerativeReport, perSample: Bool)

    public var json: String {
        switch self {
        case .ppl(let r): return r.json
        case .gen(let r, let p): return r.json(perSample: p)
        }
    }
    public var table: String {
        switch self {
        case .ppl(let r): return r.table
        case .gen(let r, _): return r.table
        }
    }
}

/// What a `score gen --shard i/n` report carries for the merge (JSON "shard_data"): the record count and checksum of
/// the stream it read (shards of one stream must agree), the settings every shard must share, and
/// per scored sample its score, its position in the stream and the tokens distinct-n counted (EOS `excluded`).
/// Floating-point values are written as Swift's shortest round-trip decimal strings, so they read back exactly
/// (a JSON number parsed by Foundation may lose the last bit).
public struct GenerativeShard: Sendable {
    public var shard: Shard
    public var records = 0
    public var inputCRC: UInt32 = 0
    public var positions: [Int] = []
    public var grams: [[Int32]] = []
    public var excluded: Int32 = -1
    public var settings: [String: String] = [:]
    public init(shard: Shard) { self.shard = shard }

    /// crc32c over a record's id, token count and tokens (little-endian), chained over the stream.
    static func checksum(_ r: TokenRecord, crc: UInt32) -> UInt32 {
        let head = [r.id.littleEndian, UInt64(r.tokens.count).littleEndian]
        let c = head.withUnsafeBytes { crc32c($0, crc: crc) }
        return r.tokens.map { $0.littleEndian }.withUnsafeBytes { crc32c($0, crc: c) }
    }

    static func d(_ x: Double) -> String { "\(x)" }

    func json(_ samples: [SampleScore]) -> [String: Any] {
        precondition(samples.count == positions.count && samples.count == grams.count)
        let rows = samples.indices.map { i -> [String: Any] in
            let s = samples[i]
            var row: [String: Any] = ["position": positions[i], "id": "\(s.id)", "nll": Self.d(s.nll), "tokens": s.tokens,
                                      "length": s.length, "entropy": Self.d(s.entropy), "nfe": "\(s.nfe)", "stages": s.stages,
                                      "degenerate": s.degenerate, "generated": s.generated, "ids": grams[i].map { Int($0) }]
            if let w = s.words {
                row["words"] = ["words": w.words, "repeats": w.repeats, "ppl_ordered": Self.d(w.pplOrdered),
                                "ppl_shuffled": w.pplShuffled.map(Self.d)] as [String: Any]
            }
            return row
        }
        return ["records": records, "input_crc32c": String(format: "%08x", inputCRC), "excluded": Int(excluded),
                "settings": settings, "samples": rows]
    }

    /// The shard data of a report (`o` the report's JSON object) and its samples, in the shard's order.
    static func parse(_ o: [String: Any], name: String) throws -> (GenerativeShard, [SampleScore]) {
        guard let sh = o["shard"] as? String, let data = o["shard_data"] as? [String: Any] else {
            throw ToolError("\(name): a score gen report without shard data; merge the reports of score gen --shard i/n runs (of this version)")
        }
        let shard: Shard
        do { shard = try Shard.parse(sh) } catch { throw ToolError("\(name): bad shard '\(sh)'") }
        func bad(_ what: String) -> ToolError { ToolError("\(name): shard_data \(what) is malformed; the report was edited or truncated — run the shard again") }
        var p = GenerativeShard(shard: shard)
        guard let n = data["records"] as? Int, n >= 0 else { throw bad("'records'") }
        guard let c = (data["input_crc32c"] as? String).flatMap({ UInt32($0, radix: 16) }) else { throw bad("'input_crc32c'") }
        guard let e = data["excluded"] as? Int, let ex = Int32(exactly: e) else { throw bad("'excluded'") }
        guard let st = data["settings"] as? [String: String] else { throw bad("'settings'") }
        guard let rows = data["samples"] as? [[String: Any]] else { throw bad("'samples'") }
        p.records = n; p.inputCRC = c; p.excluded = ex; p.settings = st
        var samples: [SampleScore] = []
        for (k, row) in rows.enumerated() {
            func dbl(_ v: Any?) -> Double? { (v as? String).flatMap(Double.init) }
            guard let pos = row["position"] as? Int, pos >= 0, pos < n,
                  let id = (row["id"] as? String).flatMap({ UInt64($0) }), let nll = dbl(row["nll"]),
                  let tokens = row["tokens"] as? Int, let length = row["length"] as? Int, let entropy = dbl(row["entropy"]),
                  let nfe = (row["nfe"] as? String).flatMap({ UInt64($0) }), let stages = row["stages"] as? [String],
                  let degenerate = row["degenerate"] as? Bool, let generated = row["generated"] as? Int,
                  let ids = row["ids"] as? [Int] else { throw bad("sample \(k)") }
            var s = SampleScore(id: id, nll: nll, tokens: tokens, length: length, entropy: entropy, nfe: nfe, stages: stages, degenerate: degenerate)
            s.generated = generated
            if let w = row["words"] {
                guard let w = w as? [String: Any], let words = w["words"] as? Int, let repeats = w["repeats"] as? Int,
                      let ordered = dbl(w["ppl_ordered"]), let sh = w["ppl_shuffled"] as? [String] else { throw bad("sample \(k)'s words") }
                let shuffled = sh.compactMap(Double.init)
                guard shuffled.count == sh.count else { throw bad("sample \(k)'s words") }
                s.words = WordStats(words: words, repeats: repeats, pplOrdered: ordered, pplShuffled: shuffled)
            }
            let g = ids.compactMap { Int32(exactly: $0) }
            guard g.count == ids.count else { throw bad("sample \(k)'s ids") }
            guard shard.contains(id) else { throw ToolError("\(name): sample \(id) does not belong to shard \(shard); the report was edited — run the shard again") }
            samples.append(s); p.positions.append(pos); p.grams.append(g)
        }
        return (p, samples)
    }
}

public enum ScoreMerge {
    /// `score merge`: the reports (JSON of score ppl or score gen, all of one kind) merged into one.
    public static func mergeReports(_ reports: [(name: String, text: String)]) throws -> MergedReport {
        guard !reports.isEmpty else { throw UsageError("score merge needs the JSON reports of the shards") }
        var kinds: [(name: String, kind: String, object: [String: Any])] = []
        for (name, text) in reports {
            guard let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw ToolError("\(name): not a JSON object (expected the output of score ppl or score gen)")
            }
            let kind: String
            if o.keys.contains("gen_ppl") { kind = "gen" }
            else if o.keys.contains("ppl") || o.keys.contains("sums") { kind = "ppl" }
            else { throw ToolError("\(name): neither a score ppl nor a score gen report") }
            kinds.append((name, kind, o))
        }
        if let other = kinds.first(where: { $0.kind != kinds[0].kind }) {
            throw ToolError("cannot merge a score \(kinds[0].kind) report (\(kinds[0].name)) with a score \(other.kind) report (\(other.name)); merge the shards of one command at a time")
        }
        if kinds[0].kind == "ppl" { return .ppl(try merge(reports)) }
        return try mergeGen(kinds.map { ($0.name, $0.object) })
    }

    /// Every shard 0..<n given exactly once.
    static func checkShardSet(_ parts: [(name: String, shard: Shard)]) throws {
        let first = parts[0]
        let n = first.shard.count
        var seen = Set<Int>()
        for (name, s) in parts {
            guard s.count == n else { throw ToolError("\(name) is shard \(s) but \(first.name) is one of \(n)") }
            guard seen.insert(s.index).inserted else { throw ToolError("\(name): shard \(s) given twice") }
        }
        let missing = (0..<n).filter { !seen.contains($0) }
        guard missing.isEmpty else {
            throw ToolError("missing shard\(missing.count == 1 ? "" : "s") \(missing.map { "\($0)/\(n)" }.joined(separator: ", ")); run them and merge all \(n)")
        }
    }

    static func mergeGen(_ objects: [(name: String, object: [String: Any])]) throws -> MergedReport {
        var parts: [(name: String, data: GenerativeShard, samples: [SampleScore], perSample: Bool)] = []
        for (name, o) in objects {
            let (p, s) = try GenerativeShard.parse(o, name: name)
            parts.append((name, p, s, o["per_sample"] != nil))
        }
        try checkShardSet(parts.map { ($0.name, $0.data.shard) })
        let first = parts[0]
        for p in parts.dropFirst() {
            for k in Set(p.data.settings.keys).union(first.data.settings.keys).sorted() where p.data.settings[k] != first.data.settings[k] {
                throw ToolError("\(p.name): its \(k) (\(p.data.settings[k] ?? "none")) differs from \(first.name)'s (\(first.data.settings[k] ?? "none")); merge the shards of one score gen command only")
            }
            guard p.perSample == first.perSample else {
                throw ToolError("\(p.name) and \(first.name) differ in --per-sample; run every shard with it or every shard without")
            }
        }
        // Two ways to shard: every shard reads one stream (the same records and checksum; the merged order is the
        // stream's), or each reads its own part — the output of `draft/refine --shard i/n`, holding only its ids
        // (the merged order is shard 0's part, then shard 1's, …: the parts concatenated in shard order).
        let common = parts.allSatisfy { $0.data.records == first.data.records && $0.data.inputCRC == first.data.inputCRC }
        if !common {
            for p in parts where p.samples.count != p.data.records {
                let other = parts.first { $0.name != p.name }!
                throw ToolError("\(p.name) scored another samples stream than \(other.name) (\(p.data.records) records, checksum \(String(format: "%08x", p.data.inputCRC)) vs \(other.data.records), \(String(format: "%08x", other.data.inputCRC))), and \(p.data.records - p.samples.count) of its records belong to other shards: merge shards that all read one stream, or that each read their own part (the output of draft/refine --shard i/n)")
            }
        }
        var all: [(key: (Int, Int), sample: SampleScore, grams: [Int32])] = []
        var excluded: Int32? = nil
        for p in parts {
            let part = common ? 0 : p.data.shard.index
            for i in p.samples.indices { all.append(((part, p.data.positions[i]), p.samples[i], p.data.grams[i])) }
            if !p.samples.isEmpty {
                if let e = excluded, e != p.data.excluded {
                    throw ToolError("\(p.name): distinct-n excluded token \(p.data.excluded), another shard \(e); merge the shards of one score gen command only")
                }
                excluded = p.data.excluded
            }
        }
        all.sort { $0.key < $1.key }
        for k in all.indices.dropFirst() where all[k].key == all[k - 1].key {
            throw ToolError("two shards scored the record at position \(all[k].key.1) (sample \(all[k].sample.id)); merge the shards of one score gen command only")
        }
        let records = common ? first.data.records : parts.reduce(0) { $0 + $1.data.records }
        guard all.count == records else {
            throw ToolError("the shards scored \(all.count) samples but their stream holds \(records) records; a shard report is incomplete — run it again")
        }
        var distinct = DistinctNGrams()
        for a in all { distinct.add(a.grams, excluding: excluded ?? -1) }
        let st = first.data.settings
        guard let scorer = st["scorer"], let below = st["degenerate_below"].flatMap(Double.init) else {
            throw ToolError("\(first.name): shard_data 'settings' lacks the scorer or degenerate_below; run the shard again")
        }
        var r = GenerativeReport(samples: all.map(\.sample), distinct: (1...DistinctNGrams.maxN).map { distinct.ratio($0) },
                                 scorer: scorer, degenerateBelow: below)
        r.scorerDType = st["scorer_dtype"].flatMap { WeightDType(rawValue: $0) }
        return .gen(r, perSample: first.perSample)
    }

    /// Parses each report (the JSON `score ppl` prints), checks they are the n distinct shards of one evaluation,
    /// and returns the merged report.
    public static func merge(_ reports: [(name: String, text: String)]) throws -> PerplexityResult {
        guard !reports.isEmpty else { throw UsageError("score merge needs the JSON reports of the shards") }
        var parts: [(String, [String: Any], Shard)] = []
        for (name, text) in reports {
            guard let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw ToolError("\(name): not a JSON object (expected the output of score ppl)")
            }
            if o.keys.contains("gen_ppl") { throw ToolError("\(name) is a score gen report; ScoreMerge.merge takes score ppl reports (score merge takes either)") }
            guard o["sums"] is [String: Any], let sh = o["shard"] as? String else {
                throw ToolError("\(name): no shard sums; merge the reports of score ppl --shard i/n from this version")
            }
            let shard: Shard
            do { shard = try Shard.parse(sh) } catch { throw ToolError("\(name): bad shard '\(sh)'") }
            parts.append((name, o, shard))
        }
        // The same evaluation in every part.
        let keys = ["samples", "exact", "block_size", "interval", "schedule", "schedule_params", "note"]
        let first = parts[0]
        for (name, o, _) in parts.dropFirst() {
            for k in keys where !same(o[k], first.1[k]) {
                throw ToolError("\(name): '\(k)' differs from \(first.0)'s; merge shards of one score ppl command only")
            }
            // What was scored (recorded since score gen shards; older reports have neither).
            let (a, b) = (o["sums"] as! [String: Any], first.1["sums"] as! [String: Any])
            for (k, what) in [("input", "test stream"), ("model", "checkpoint")] where !same(a[k], b[k]) {
                throw ToolError("\(name) scored another \(what) than \(first.0) (\(a[k] ?? "unrecorded") vs \(b[k] ?? "unrecorded")); merge the shards of one score ppl command only")
            }
        }
        for (name, o, _) in parts.dropFirst() where !same(o["dtype"], first.1["dtype"]) {
            throw ToolError("\(name): 'dtype' differs from \(first.0)'s; merge shards of one score ppl command only")
        }
        try checkShardSet(parts.map { ($0.0, $0.2) })

        func num(_ x: Any?) -> Double { (x as? NSNumber)?.doubleValue ?? .nan }
        var nll = 0.0, count = 0, batches = 0, sequences = 0
        var schedNLL = 0.0, schedCount = 0, hasSched = false
        var vars: [(ClipInterval, Double, Int)] = []
        for (name, o, _) in parts {
            let s = o["sums"] as! [String: Any]
            nll += num(s["nll"]); count += (s["count"] as? Int) ?? 0; batches += (s["batches"] as? Int) ?? 0
            sequences += (o["sequences"] as? Int) ?? 0
            if let sn = s["schedule_nll"] { hasSched = true; schedNLL += num(sn); schedCount += (s["schedule_count"] as? Int) ?? 0 }
            let v = (s["var"] as? [[String: Any]]) ?? []
            if vars.isEmpty && !v.isEmpty { vars = v.map { (ClipInterval(num($0["min"]), num($0["max"])), 0, 0) } }
            guard v.count == vars.count else { throw ToolError("\(name): its Var. NELBO intervals differ from the other shards'") }
            for (j, e) in v.enumerated() {
                guard num(e["min"]) == vars[j].0.min, num(e["max"]) == vars[j].0.max else {
                    throw ToolError("\(name): its Var. NELBO intervals differ from the other shards'")
                }
                vars[j].1 += num(e["sum"]); vars[j].2 += (e["batches"] as? Int) ?? 0
            }
        }
        guard count > 0 else { throw ToolError("the shards scored no tokens") }
        let K = (first.1["samples"] as? Int) ?? 1
        let interval = (first.1["interval"] as? [Double]).map { ClipInterval($0[0], $0[1]) }
        var r = PerplexityResult(nll: nll / Double(count), tokens: count / K, sequences: sequences, samples: K,
                                 interval: interval, exact: (first.1["exact"] as? Bool) ?? false,
                                 varNELBO: vars.map { ($0.0, $0.2 > 0 ? $0.1 / Double($0.2) : .nan) })
        r.blockSize = (first.1["block_size"] as? Int) ?? 0
        r.note = first.1["note"] as? String
        r.dtype = (first.1["dtype"] as? String).flatMap { WeightDType(rawValue: $0) }
        if hasSched, let name = first.1["schedule"] as? String {
            r.schedule = (name, (first.1["schedule_params"] as? String) ?? "", schedNLL / Double(max(schedCount, 1)))
        }
        var sums = PerplexitySums(shard: .whole, nllSum: nll, count: count, batches: batches)
        sums.variance = vars
        if hasSched { sums.scheduleNLLSum = schedNLL; sums.scheduleCount = schedCount }
        let s0 = first.1["sums"] as! [String: Any]
        sums.input = s0["input"] as? String; sums.model = s0["model"] as? String
        r.sums = sums
        return r
    }

    static func same(_ a: Any?, _ b: Any?) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case let (x as NSObject, y as NSObject): return x.isEqual(y)
        default: return false
        }
    }
}
