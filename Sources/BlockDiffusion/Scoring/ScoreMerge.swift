// `score merge`: one `score ppl` report from the reports of its `--shard i/n` runs. The aggregate is recomputed
// from the shards' additive sums (NLL sum and token count, per-batch variance sums and batch counts), never
// from averages of averages, so it equals the unsharded run's report up to the order of the floating-point sums.
import Foundation

public enum ScoreMerge {
    /// Parses each report (the JSON `score ppl` prints), checks they are the n distinct shards of one evaluation,
    /// and returns the merged report.
    public static func merge(_ reports: [(name: String, text: String)]) throws -> PerplexityResult {
        guard !reports.isEmpty else { throw UsageError("score merge needs the JSON reports of the shards") }
        var parts: [(String, [String: Any], Shard)] = []
        for (name, text) in reports {
            guard let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw ToolError("\(name): not a JSON object (expected the output of score ppl)")
            }
            guard o["sums"] is [String: Any], let sh = o["shard"] as? String else {
                throw ToolError("\(name): no shard sums; merge the reports of score ppl --shard i/n from this version")
            }
            let shard: Shard
            do { shard = try Shard.parse(sh) } catch { throw ToolError("\(name): bad shard '\(sh)'") }
            parts.append((name, o, shard))
        }
        // The same evaluation in every part.
        let keys = ["samples", "exact", "block_size", "interval", "schedule", "schedule_params"]
        let first = parts[0]
        for (name, o, _) in parts.dropFirst() {
            for k in keys where !same(o[k], first.1[k]) {
                throw ToolError("\(name): '\(k)' differs from \(first.0)'s; merge shards of one score ppl command only")
            }
        }
        for (name, o, _) in parts.dropFirst() where !same(o["dtype"], first.1["dtype"]) {
            throw ToolError("\(name): 'dtype' differs from \(first.0)'s; merge shards of one score ppl command only")
        }
        let n = first.2.count
        var seen = Set<Int>()
        for (name, _, s) in parts {
            guard s.count == n else { throw ToolError("\(name) is shard \(s) but \(first.0) is one of \(n)") }
            guard seen.insert(s.index).inserted else { throw ToolError("\(name): shard \(s) given twice") }
        }
        let missing = (0..<n).filter { !seen.contains($0) }
        guard missing.isEmpty else {
            throw ToolError("missing shard\(missing.count == 1 ? "" : "s") \(missing.map { "\($0)/\(n)" }.joined(separator: ", ")); run them and merge all \(n)")
        }

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
        r.dtype = (first.1["dtype"] as? String).flatMap { WeightDType(rawValue: $0) }
        if hasSched, let name = first.1["schedule"] as? String {
            r.schedule = (name, (first.1["schedule_params"] as? String) ?? "", schedNLL / Double(max(schedCount, 1)))
        }
        var sums = PerplexitySums(shard: .whole, nllSum: nll, count: count, batches: batches)
        sums.variance = vars
        if hasSched { sums.scheduleNLLSum = schedNLL; sums.scheduleCount = schedCount }
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
