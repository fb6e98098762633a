// `score gen` arithmetic (spec §3.2): sliding windows, unigram entropy, distinct-n, per-sample scores
// and their aggregates. Everything here is pure; GenerativeScoring.swift feeds it.
//
// Public API:
//   GenerativeWindows.plan(length:context:stride:) -> [ScoringWindow]     the reference's sliding window
//   ScoringWindow { start, end, scoreFrom }          input tokens [start, end), targets [scoreFrom, end)
//   unigramEntropy(_ tokens:) -> Double              Σ −p ln p over the token frequencies (nats)
//   DistinctNGrams (add(_:excluding:), ratio(n))     distinct-n over a set of samples, n = 1…4
//   SampleScore                                       one sample's NLL sum, scored tokens, entropy, NFE, …
//   WordOrder.words / immediateRepeats / shuffled      words of a decoded sample, their repeats, seeded shuffles
//   WordStats                                          one sample's words, repeats and order gain
//   GenerativeReport(samples:distinct:scorer:degenerateBelow:)   aggregates (incl. order gain, repeat rate), json(perSample:), table
//                                                      (+ shard: GenerativeShard for `--shard` runs, see ScoreMerge.swift)
import Foundation

/// One forward window of the scorer: it reads tokens [start, end) and contributes the NLL of the
/// targets at positions [scoreFrom, end) (each predicted from the tokens before it inside the window).
public struct ScoringWindow: Equatable, Sendable, CustomStringConvertible {
    public var start: Int
    public var end: Int
    public var scoreFrom: Int
    public init(start: Int, end: Int, scoreFrom: Int) { self.start = start; self.end = end; self.scoreFrom = scoreFrom }
    public var description: String { "[\(start),\(end)) scores [\(scoreFrom),\(end))" }
}

public enum GenerativeWindows {
    /// The reference's sliding window (bd3lms `record_generative_perplexity`):
    ///   count = max(1, ⌈(n − ctx + stride) / stride⌉)
    ///   window 0 = [0, min(ctx, n)), scoring positions 1…end−1;
    ///   window i ≥ 1 starts at i·stride, ends at min(start + ctx, n) and scores only
    ///   [start + ctx − stride, end) — the positions past the previous window's end (for ctx 1024 and
    ///   stride 512: its last 512 positions). So every position 1…n−1 is scored exactly once, with
    ///   between ctx − stride and ctx − 1 tokens of context once the sample is longer than ctx.
    /// Needs 1 ≤ stride < ctx (stride = ctx would leave the first token of a window without context).
    public static func plan(length n: Int, context ctx: Int, stride: Int) -> [ScoringWindow] {
        precondition(ctx >= 2 && stride >= 1 && stride < ctx, "need 1 ≤ stride < context")
        if n <= ctx { return [ScoringWindow(start: 0, end: n, scoreFrom: min(1, n))] }
        let count = (n - ctx + stride + stride - 1) / stride
        var out = [ScoringWindow(start: 0, end: ctx, scoreFrom: 1)]
        for i in 1..<count {
            let start = i * stride
            out.append(ScoringWindow(start: start, end: min(start + ctx, n), scoreFrom: start + ctx - stride))
        }
        return out
    }
}

/// Unigram entropy of one sample in nats: Σ −p ln p with p the frequency of each distinct token
/// (the reference's `torch.special.entr(counts / counts.sum()).sum()`). 0 for an empty sample.
public func unigramEntropy(_ tokens: [Int32]) -> Double {
    guard !tokens.isEmpty else { return 0 }
    var counts: [Int32: Int] = [:]
    for t in tokens { counts[t, default: 0] += 1 }
    let n = Double(tokens.count)
    var h = 0.0
    // Sum in token order: Dictionary order changes per process, and float addition is not associative.
    for (_, c) in counts.sorted(by: { $0.key < $1.key }) { let p = Double(c) / n; h -= p * log(p) }
    return h
}

/// distinct-n over a set of samples: (number of distinct n-grams) / (number of n-grams), n-grams
/// taken inside each sample. N-grams containing an excluded token (EOS/BOS) are not counted, so
/// document separators do not create spurious n-grams.
public struct DistinctNGrams: Sendable {
    struct Gram: Hashable { var a, b, c, d: Int32 }
    public static let maxN = 4
    var seen: [Set<Gram>] = Array(repeating: [], count: DistinctNGrams.maxN)
    public private(set) var total = [Int](repeating: 0, count: DistinctNGrams.maxN)
    public init() {}

    public mutating func add(_ tokens: [Int32], excluding excluded: Int32 = -1) {
        for n in 1...DistinctNGrams.maxN where tokens.count >= n {
            for i in 0...(tokens.count - n) {
                var g = Gram(a: -1, b: -1, c: -1, d: -1)
                var ok = true
                for k in 0..<n {
                    let t = tokens[i + k]
                    if t == excluded && excluded >= 0 { ok = false; break }
                    switch k { case 0: g.a = t; case 1: g.b = t; case 2: g.c = t; default: g.d = t }
                }
                guard ok else { continue }
                total[n - 1] += 1
                seen[n - 1].insert(g)
            }
        }
    }

    public func distinctCount(_ n: Int) -> Int { seen[n - 1].count }
    /// distinct-n ∈ [0, 1]; NaN when the set has no n-gram.
    public func ratio(_ n: Int) -> Double { total[n - 1] == 0 ? .nan : Double(seen[n - 1].count) / Double(total[n - 1]) }
}

/// Word-level views of a decoded sample, for the metrics that see word order (issue: a sampler can lower
/// Gen PPL by lowering entropy without ordering words any better).
///   words            whitespace-separated pieces of the text (special tokens left out before decoding)
///   immediate repeat word i equal to word i − 1, compared case-folded
///   order gain       PPL(words in a seeded random order) / PPL(words in their order), both texts the
///                    words joined by single spaces so that only the order differs; mean over K shuffles.
///                    Real text scores well above 1 under any decent scorer; word salad scores ≈ 1.
public enum WordOrder {
    public static func words(_ text: String) -> [String] {
        text.split(whereSeparator: { $0.isWhitespace }).map(String.init)
    }

    public static func immediateRepeats(_ words: [String]) -> Int {
        guard words.count > 1 else { return 0 }
        var n = 0, prev = words[0].lowercased()
        for w in words.dropFirst() { let l = w.lowercased(); if l == prev { n += 1 }; prev = l }
        return n
    }

    /// Shuffle k (0-based) of a sample: Fisher–Yates under a generator seeded from (seed, id, k), so a
    /// sample's shuffles do not depend on the other samples in the stream.
    public static func shuffled(_ words: [String], seed: UInt64, id: UInt64, k: Int) -> [String] {
        var rng = SplitMix64(seed: SplitMix64.mix(seed &+ SplitMix64.mix(id &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(k + 1))))
        var w = words
        rng.fisherYates(&w)
        return w
    }
}

/// Words, repeats and order gain of one sample.
public struct WordStats: Equatable, Sendable {
    public var words: Int
    public var repeats: Int
    /// The scorer's PPL of the words joined by single spaces, in their order (NaN when not scored).
    public var pplOrdered: Double
    /// The same words in each seeded shuffle.
    public var pplShuffled: [Double]
    public init(words: Int, repeats: Int, pplOrdered: Double = .nan, pplShuffled: [Double] = []) {
        self.words = words; self.repeats = repeats; self.pplOrdered = pplOrdered; self.pplShuffled = pplShuffled
    }
    /// mean_k PPL(shuffle k) / PPL(ordered); NaN without shuffles or with an unscored text.
    public var orderGain: Double {
        guard !pplShuffled.isEmpty, pplOrdered.isFinite, pplOrdered > 0 else { return .nan }
        let g = pplShuffled.map { $0 / pplOrdered }
        return g.contains { !$0.isFinite } ? .nan : g.reduce(0, +) / Double(g.count)
    }
}

/// One scored sample.
public struct SampleScore: Equatable, Sendable {
    public var id: UInt64
    /// Sum of the token NLLs in nats, over the `tokens` scored (valid, non-EOS) targets.
    public var nll: Double
    public var tokens: Int
    /// The sample's length in its own tokens (the stream's record).
    public var length: Int
    /// Unigram entropy (nats) of the sample as the scorer sees it (re-tokenised when it was).
    public var entropy: Double
    public var nfe: UInt64
    public var stages: [String]
    public var degenerate: Bool
    /// Positions written by a sampling forward (unmask step > 0; without that field, length − prompt).
    public var generated = 0
    /// Words, repeats, order gain (nil when the samples' tokenizer was not given).
    public var words: WordStats?
    public init(id: UInt64, nll: Double, tokens: Int, length: Int, entropy: Double, nfe: UInt64, stages: [String], degenerate: Bool,
                words: WordStats? = nil) {
        self.id = id; self.nll = nll; self.tokens = tokens; self.length = length; self.entropy = entropy
        self.nfe = nfe; self.stages = stages; self.degenerate = degenerate; self.words = words
    }
    /// exp(mean NLL over the scored tokens); NaN when nothing was scored.
    public var ppl: Double { tokens > 0 ? exp(nll / Double(tokens)) : .nan }
}

/// The aggregates `score gen` prints.
public struct GenerativeReport: Sendable {
    public var samples: [SampleScore]
    public var distinct: [Double]        // distinct-1 … distinct-4
    public var scorer: String
    public var degenerateBelow: Double
    /// A `--shard i/n` run: what `score merge` needs (ScoreMerge.swift); nil otherwise.
    public var shard: GenerativeShard? = nil
    /// The checkpoint scorer's weights (score gen --dtype); nil for a scorer command.
    public var scorerDType: WeightDType? = nil

    public init(samples: [SampleScore], distinct: [Double], scorer: String, degenerateBelow: Double = 4) {
        self.samples = samples; self.distinct = distinct; self.scorer = scorer; self.degenerateBelow = degenerateBelow
    }

    var scored: [SampleScore] { samples.filter { $0.tokens > 0 } }
    /// Arithmetic mean of the per-sample PPLs (the papers' number, `log_sample_stats.py`); samples
    /// with no scored token are left out (counted in `unscored`).
    public var genPPL: Double { let s = scored; return s.isEmpty ? .nan : s.map(\.ppl).reduce(0, +) / Double(s.count) }
    /// Token-weighted: exp(total NLL / total scored tokens) (the reference's in-process metric).
    public var genPPLTokens: Double { let n = totalTokens; return n > 0 ? exp(totalNLL / Double(n)) : .nan }
    public var totalNLL: Double { samples.reduce(0) { $0 + $1.nll } }
    public var totalTokens: Int { samples.reduce(0) { $0 + $1.tokens } }
    public var meanNFE: Double { samples.isEmpty ? .nan : Double(samples.reduce(0.0) { $0 + Double($1.nfe) }) / Double(samples.count) }
    /// Σ generated / Σ NFE: tokens per forward (parallel decoding > 1; first-hitting = 1; DiD < 1).
    public var tokensPerForward: Double {
        let n = samples.reduce(0.0) { $0 + Double($1.nfe) }
        return n > 0 ? Double(samples.reduce(0) { $0 + $1.generated }) / n : .nan
    }
    public var meanEntropy: Double { samples.isEmpty ? .nan : samples.reduce(0) { $0 + $1.entropy } / Double(samples.count) }
    public var degenerateIDs: [UInt64] { samples.filter(\.degenerate).map(\.id) }
    /// Mean of the per-sample order gains (samples with a finite gain); NaN when none has one.
    public var orderGain: Double {
        let g = samples.compactMap { $0.words?.orderGain }.filter(\.isFinite)
        return g.isEmpty ? .nan : g.reduce(0, +) / Double(g.count)
    }
    /// Samples whose order gain is counted in `orderGain`.
    public var orderGainSamples: Int { samples.compactMap { $0.words?.orderGain }.filter(\.isFinite).count }
    /// Immediate word repeats over all adjacent word pairs of all samples; NaN without words.
    public var repeatRate: Double {
        let w = samples.compactMap(\.words)
        let pairs = w.reduce(0) { $0 + max(0, $1.words - 1) }
        return pairs == 0 ? .nan : Double(w.reduce(0) { $0 + $1.repeats }) / Double(pairs)
    }
    public var totalWords: Int { samples.reduce(0) { $0 + ($1.words?.words ?? 0) } }
    /// Shuffles per sample (the largest count seen; 0 when order gain was not measured).
    public var orderShuffles: Int { samples.map { $0.words?.pplShuffled.count ?? 0 }.max() ?? 0 }
    public var lengthMax: Int { samples.map(\.length).max() ?? 0 }
    /// Median as numpy's: the mean of the two middle values for an even count.
    public var lengthMedian: Double {
        let s = samples.map(\.length).sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? Double(s[s.count / 2]) : Double(s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    /// Distinct stage histories with their sample counts, most frequent first (ties in first-seen order).
    public var stageHistories: [(history: [String], samples: Int)] {
        var order: [[String]] = [], counts: [[String]: Int] = [:]
        for s in samples {
            if counts[s.stages] == nil { order.append(s.stages) }
            counts[s.stages, default: 0] += 1
        }
        let indexed = order.enumerated().map { ($0.offset, $0.element, counts[$0.element]!) }
        return indexed.sorted { $0.2 != $1.2 ? $0.2 > $1.2 : $0.0 < $1.0 }.map { ($0.1, $0.2) }
    }

    static func num(_ x: Double) -> Any { x.isFinite ? x : NSNull() }

    /// One JSON object (sorted keys). `perSample` adds "per_sample": [{id, tokens, length, nll, ppl,
    /// entropy, nfe, degenerate}] in input order.
    public func json(perSample: Bool) -> String {
        var o: [String: Any] = [
            "gen_ppl": Self.num(genPPL), "gen_ppl_tokens": Self.num(genPPLTokens),
            "nll": Self.num(totalTokens > 0 ? totalNLL / Double(totalTokens) : .nan), "tokens": totalTokens,
            "nfe": Self.num(meanNFE), "entropy": Self.num(meanEntropy), "tokens_per_forward": Self.num(tokensPerForward),
            "length_median": Self.num(lengthMedian), "length_max": lengthMax, "samples": samples.count,
            "unscored": samples.count - scored.count, "scorer": scorer,
            "degenerate": ["count": degenerateIDs.count, "ids": degenerateIDs.map { NSNumber(value: $0) },
                           "entropy_below": degenerateBelow] as [String: Any],
            "stages": stageHistories.map { ["history": $0.history, "samples": $0.samples] as [String: Any] },
            "order_gain": Self.num(orderGain), "order_gain_samples": orderGainSamples, "order_shuffles": orderShuffles,
            "repeat_rate": Self.num(repeatRate), "words": totalWords,
        ]
        if let scorerDType { o["scorer_dtype"] = scorerDType.rawValue }
        for n in 1...DistinctNGrams.maxN { o["distinct_\(n)"] = Self.num(n <= distinct.count ? distinct[n - 1] : .nan) }
        if perSample {
            o["per_sample"] = samples.map { s -> [String: Any] in
                var row: [String: Any] = ["id": NSNumber(value: s.id), "tokens": s.tokens, "length": s.length, "nll": s.nll, "ppl": Self.num(s.ppl),
                 "entropy": s.entropy, "nfe": NSNumber(value: s.nfe), "degenerate": s.degenerate, "generated": s.generated,
                 "tokens_per_forward": Self.num(s.nfe > 0 ? Double(s.generated) / Double(s.nfe) : .nan)]
                if let w = s.words {
                    row["words"] = w.words; row["repeats"] = w.repeats
                    row["ppl_ordered"] = Self.num(w.pplOrdered); row["ppl_shuffled"] = w.pplShuffled.map { Self.num($0) }
                    row["order_gain"] = Self.num(w.orderGain)
                }
                return row
            }
        }
        if let sh = shard {
            o["shard"] = sh.shard.description
            o["shard_data"] = sh.json(samples)
        }
        let d = try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: d, as: UTF8.self)
    }

    /// A readable summary for stderr.
    public var table: String {
        func f(_ x: Double, _ p: Int = 3) -> String { x.isFinite ? String(format: "%.\(p)f", x) : "n/a" }
        var s = "generative perplexity of \(samples.count) sample\(samples.count == 1 ? "" : "s") under \(scorer)"
        if let sh = shard { s += ", shard \(sh.shard) of a stream of \(sh.records) record\(sh.records == 1 ? "" : "s") (merge the shards with score merge)" }
        s += "\n"
        s += "  gen PPL (mean of per-sample)   \(f(genPPL))\n"
        s += "  gen PPL (token-weighted)       \(f(genPPLTokens))   over \(totalTokens) tokens\n"
        s += "  NFE (mean)                     \(f(meanNFE, 1))\n"
        s += "  tokens per forward             \(f(tokensPerForward))\n"
        s += "  entropy (mean, nats)           \(f(meanEntropy))\n"
        s += "  length median / max            \(f(lengthMedian, 1)) / \(lengthMax)\n"
        s += "  distinct-1..4                  " + (0..<DistinctNGrams.maxN).map { f($0 < distinct.count ? distinct[$0] : .nan) }.joined(separator: " ") + "\n"
        if samples.contains(where: { $0.words != nil }) {
            s += "  order gain (shuffled/ordered)  \(f(orderGain))   \(orderShuffles) shuffle\(orderShuffles == 1 ? "" : "s"), \(orderGainSamples) samples\n"
            s += "  immediate word repeats         \(f(repeatRate * 100, 2)) %   of \(totalWords) words\n"
        }
        let deg = degenerateIDs
        s += "  degenerate (entropy < \(f(degenerateBelow, 1)))    \(deg.count)"
        if !deg.isEmpty { s += "  ids " + deg.prefix(20).map(String.init).joined(separator: ",") + (deg.count > 20 ? ",…" : "") }
        s += "\n"
        if samples.count > scored.count { s += "  unscored (no valid token)      \(samples.count - scored.count)\n" }
        let hist = stageHistories
        if !hist.isEmpty {
            s += "  stage histories\n"
            for h in hist.prefix(10) {
                s += "    \(h.samples)× " + (h.history.isEmpty ? "(none)" : h.history.joined(separator: " → ")) + "\n"
            }
            if hist.count > 10 { s += "    … \(hist.count - 10) more\n" }
        }
        return s
    }
}
