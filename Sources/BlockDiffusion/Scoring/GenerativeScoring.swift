// `score gen` (spec §3.2): generative perplexity of a `samples` stream under a scorer model.
//
//   scorer = AR checkpoint (default; `train --algo ar`)  or  an external command (docs/scorer-protocol.md)
//   per sample: ids → (re-tokenised when the tokenizers differ) → NLL sum over the scored targets
//               (sliding window, EOS targets excluded) → ppl = exp(nll / tokens), unigram entropy,
//               degenerate when entropy < 4 nats
//   words     : with the samples' tokenizer (-t): the sample's words, immediate repeats, and the scorer's
//               PPL of the words joined by spaces in order and in K seeded shuffles (order gain); these
//               texts go through the same scorer (checkpoint: encoded with its tokenizer; command:
//               extra requests with the sample's id, answered in order like the others)
//   report    : GenerativeReport (gen_ppl = mean of per-sample PPLs, gen_ppl_tokens = token-weighted, …)
//   --shard   : only the samples with id ≡ i (mod n); the report carries GenerativeShard, from which
//               `score merge` rebuilds the unsharded report exactly (ScoreMerge.swift)
//
// Which tokens: with a checkpoint, the scorer's tokens (the samples' ids themselves when both use the
// same tokenizer; fingerprint 0 = unknown counts as the same when the vocabulary sizes agree). With a
// command, the text goes to the command; entropy and distinct-n use the samples re-tokenised with
// --scorer-tokenizer when given, else the samples' own ids. Prompt tokens are scored like the rest.
//
// Public API:
//   GenerativeOptions { samplesTokenizer, scorerTokenizer, stride, maxTokens, degenerateBelow, scorerTimeout, progress, shard, dtype }
//   GenerativeScorerChoice .checkpoint(path) | .command(cmd)
//   GenerativeScoring.run(input:scorer:options:) throws -> GenerativeReport
import Foundation

public struct GenerativeOptions {
    /// The tokenizer of the samples (needed to decode them: always with a command, and with a
    /// checkpoint of another tokenizer).
    public var samplesTokenizer: BPETokenizer?
    /// The scorer's tokenizer (needed with a checkpoint of another tokenizer; optional with a command).
    public var scorerTokenizer: BPETokenizer?
    /// Sliding-window stride (checkpoint scorer); default context / 2.
    public var stride: Int?
    /// Keep only the first N scorer tokens of each sample (the reference truncates to the model length).
    public var maxTokens: Int?
    public var degenerateBelow = 4.0
    /// Scorer command: seconds to wait for an answer when only the scorer can make progress (0 = no limit).
    public var scorerTimeout = ScorerCommand.defaultReplyTimeout
    /// Called on the calling thread after each scored sample with the running count.
    public var progress: ((Int) -> Void)?
    /// Facts a reference AR state_dict lacks (Checkpoint.open), for the checkpoint scorer.
    public var scorerOverrides = CheckpointOverrides()
    /// Weights of the checkpoint scorer (ARCheckpointScorer): fp32, or bf16 through the inference engine.
    public var dtype: WeightDType = .fp32
    /// Order gain: shuffles of each sample's words (0 = not measured). Words need `samplesTokenizer`.
    public var orderShuffles = 3
    public var orderSeed: UInt64 = 1
    /// `--shard i/n`: score only the samples with id ≡ i (mod n), and carry in the report what `score merge`
    /// needs to rebuild the whole run's report exactly (GenerativeShard). nil = not sharded.
    public var shard: Shard?
    public init() {}

    /// The checks that need no file (exit 64); the stride is checked against the scorer's context on load.
    public func validate(command: Bool) throws {
        if let s = stride { try checkRange(s, 1...Limits.length, "--stride") }
        if command && dtype != .fp32 { throw UsageError("--dtype applies to a checkpoint scorer (--scorer); a scorer command chooses its own precision") }
        if let m = maxTokens {
            guard !command else { throw UsageError("--max-tokens applies to a checkpoint scorer; a scorer command truncates itself (e.g. hf_gpt2.py --max-length)") }
            try checkRange(m, 2...Limits.length, "--max-tokens")
        }
        guard scorerTimeout >= 0, scorerTimeout.isFinite else {
            throw UsageError("--scorer-timeout must be a number of seconds ≥ 0 (0 = no limit; got \(scorerTimeout))")
        }
        guard degenerateBelow.isFinite, degenerateBelow >= 0 else {
            throw UsageError("--degenerate-below must be an entropy ≥ 0 in nats (got \(degenerateBelow))")
        }
        try checkRange(orderShuffles, 0...1000, "--order-shuffles", "0 = no order gain")
    }
}

public enum GenerativeScorerChoice {
    case checkpoint(String)
    case command(String)
}

public enum GenerativeScoring {
    public static func run(input: TokenStreamReader, scorer: GenerativeScorerChoice, options o: GenerativeOptions) throws -> GenerativeReport {
        if case .command = scorer { try o.validate(command: true) } else { try o.validate(command: false) }
        let h = input.header
        guard h.kind == .samples || h.kind == .documents else {
            throw ToolError("score gen needs a 'samples' stream (from draft/refine) or 'documents', not '\(h.kind)'")
        }
        if let t = o.samplesTokenizer { try requireTokenizer(t, matches: h.tokenizerFingerprint, vocab: h.vocabSize, what: "the samples (-t)") }
        var samples: [SampleScore] = []
        var distinct = DistinctNGrams()
        // Sharded: every record is read (the input's count and checksum identify it to the merge), only the
        // shard's are scored, each with its stream position and the tokens distinct-n counted. With a scorer
        // command `take` runs on the writer thread and `kept` on the reader thread: they share no variable.
        var records = 0, crc: UInt32 = 0
        var positions: [Int] = [], grams: [[Int32]] = [], excluded: Int32 = -1
        func take(_ r: TokenRecord) -> Bool {
            records += 1
            guard let sh = o.shard else { return true }
            crc = GenerativeShard.checksum(r, crc: crc)
            return sh.contains(r.id)
        }
        func kept(_ toks: [Int32], excluding eos: Int32, at pos: Int) {
            distinct.add(toks, excluding: eos)
            guard o.shard != nil else { return }
            positions.append(pos); grams.append(toks); excluded = eos
        }
        func part(_ scorer: String) -> GenerativeShard? {
            guard let sh = o.shard else { return nil }
            var p = GenerativeShard(shard: sh)
            p.records = records; p.inputCRC = crc; p.positions = positions; p.grams = grams; p.excluded = excluded
            p.settings = settings(scorer)
            return p
        }
        func settings(_ scorer: String) -> [String: String] {
            ["scorer": scorer, "degenerate_below": "\(o.degenerateBelow)", "order_shuffles": "\(o.orderShuffles)",
             "order_seed": "\(o.orderSeed)", "max_tokens": o.maxTokens.map(String.init) ?? "none",
             "samples_tokenizer": o.samplesTokenizer.map { hex($0.fingerprint) } ?? "none",
             "scorer_tokenizer": o.scorerTokenizer.map { hex($0.fingerprint) } ?? "none"]
        }
        switch scorer {
        case .checkpoint(let path):
            let ar = try ARCheckpointScorer(path: path, stride: o.stride, overrides: o.scorerOverrides, dtype: o.dtype)
            let same = h.vocabSize == ar.vocabSize
                && (h.tokenizerFingerprint == ar.info.fingerprint || h.tokenizerFingerprint == 0 || ar.info.fingerprint == 0)
            var retok: Retokenizer? = nil
            if !same {
                guard let from = o.samplesTokenizer, let to = o.scorerTokenizer else {
                    throw UsageError("the samples' tokenizer (fingerprint \(hex(h.tokenizerFingerprint)), vocabulary \(h.vocabSize)) differs from the scorer's (\(hex(ar.info.fingerprint)), \(ar.vocabSize)): give both -t SAMPLES_TOKENIZER.json and --scorer-tokenizer SCORER_TOKENIZER.json to re-tokenise")
                }
                try requireTokenizer(to, matches: ar.info.fingerprint, vocab: ar.vocabSize, what: "the scorer \(path) (--scorer-tokenizer)")
                retok = Retokenizer(from: from, to: to)
            }
            // A checkpoint without eos_id metadata: take the EOS of the tokens it is fed.
            if ar.eos < 0 { ar.eos = retok?.to.eosId ?? h.special.eos }
            while let r = try input.next() {
                guard take(r) else { continue }
                try refuseMasks(r, h)
                var toks = retok.map { $0(r.tokens) } ?? r.tokens
                if let m = o.maxTokens, toks.count > m { toks.removeLast(toks.count - m) }
                if let bad = toks.first(where: { $0 < 0 || Int($0) >= ar.vocabSize }) {
                    throw ToolError("sample \(r.id): token \(bad) is outside the scorer's vocabulary (0..<\(ar.vocabSize)); use the scorer's tokenizer")
                }
                let (nll, n) = ar.score(toks)
                guard nll.isFinite else {
                    throw ToolError("the scorer \(path) gives sample \(r.id) a non-finite NLL (\(nll)); its weights or the sample are broken, so no perplexity can be reported")
                }
                var sc = score(r, nll: nll, tokens: n, scorerTokens: toks, threshold: o.degenerateBelow)
                if let from = o.samplesTokenizer {
                    let plan = wordPlan(r, tok: from, options: o)
                    let enc = retok?.to ?? from
                    var ppl: [Double] = []
                    for t in plan.texts {
                        var ids = Retokenizer.encode(t, with: enc)
                        if let m = o.maxTokens, ids.count > m { ids.removeLast(ids.count - m) }
                        if let bad = ids.first(where: { $0 < 0 || Int($0) >= ar.vocabSize }) {
                            throw ToolError("sample \(r.id): token \(bad) of its reordered words is outside the scorer's vocabulary (0..<\(ar.vocabSize)); use the scorer's tokenizer")
                        }
                        let (l, c) = ar.score(ids)
                        ppl.append(c > 0 ? exp(l / Double(c)) : .nan)
                    }
                    sc.words = plan.stats(ppl)
                }
                samples.append(sc)
                kept(toks, excluding: ar.eos, at: records - 1)
                o.progress?(samples.count)
            }
            var shardPart = part(ar.description)
            shardPart?.settings["scorer_dtype"] = o.dtype.rawValue   // the merge refuses mixed dtypes and keeps it
            var rep = report(samples, distinct, ar.description, o.degenerateBelow, shardPart)
            rep.scorerDType = o.dtype
            return rep

        case .command(let cmd):
            guard let from = o.samplesTokenizer else {
                throw UsageError("--scorer-cmd sends text: give the samples' tokenizer with -t TOKENIZER.json to decode them")
            }
            let retok = o.scorerTokenizer.map { Retokenizer(from: from, to: $0) }
            let eos = o.scorerTokenizer?.eosId ?? h.special.eos
            // Runs on the writer thread; the reader thread only sees the prepared values. A sample is one
            // request, followed (order gain) by one request per reordered text, all with its id.
            var queue: [(ScorerRequest, Pending)] = []
            let next: () throws -> (ScorerRequest, Pending)? = {
                if !queue.isEmpty { return queue.removeFirst() }
                var rec = try input.next()
                while let r = rec, !take(r) { rec = try input.next() }
                guard let r = rec else { return nil }
                try refuseMasks(r, h)
                let toks = retok.map { $0(r.tokens) } ?? r.tokens
                let text = String(decoding: from.decode(r.tokens), as: UTF8.self)
                let plan = wordPlan(r, tok: from, options: o)
                for (k, t) in plan.texts.enumerated() {
                    queue.append((ScorerRequest(id: r.id, text: String(decoding: t, as: UTF8.self)), .reordered(k, last: k == plan.texts.count - 1)))
                }
                return (ScorerRequest(id: r.id, text: text), .sample(r, toks, plan, records - 1))
            }
            var current: (SampleScore, WordPlan, [Double])? = nil
            func finish() {
                guard var c = current else { return }
                c.0.words = c.1.stats(c.2)
                samples.append(c.0)
                o.progress?(samples.count)
                current = nil
            }
            try ScorerCommand.run(command: cmd, replyTimeout: o.scorerTimeout, next: next) { resp, meta in
                switch meta {
                case .sample(let r, let toks, let plan, let pos):
                    finish()
                    current = (score(r, nll: resp.nll, tokens: resp.tokens, scorerTokens: toks, threshold: o.degenerateBelow), plan, [])
                    kept(toks, excluding: eos, at: pos)
                    if plan.texts.isEmpty { finish() }
                case .reordered(_, let last):
                    current?.2.append(resp.tokens > 0 ? exp(resp.nll / Double(resp.tokens)) : .nan)
                    if last { finish() }
                }
            }
            finish()
            return report(samples, distinct, "command `\(cmd)`", o.degenerateBelow, part("command `\(cmd)`"))
        }
    }

    enum Pending { case sample(TokenRecord, [Int32], WordPlan, Int), reordered(Int, last: Bool) }

    /// A sample's words and the texts whose PPL gives its order gain: texts[0] the words in order,
    /// texts[1...] the shuffles, each joined by single spaces and led by the sample's leading special
    /// token (BOS) when it has one. No texts when order gain is off or the sample has < 2 words.
    struct WordPlan {
        var words: Int, repeats: Int, texts: [[UInt8]]
        func stats(_ ppl: [Double]) -> WordStats {
            WordStats(words: words, repeats: repeats, pplOrdered: ppl.first ?? .nan, pplShuffled: Array(ppl.dropFirst()))
        }
    }

    static func wordPlan(_ r: TokenRecord, tok: BPETokenizer, options o: GenerativeOptions) -> WordPlan {
        let special = { (t: Int32) in t >= 0 && Int(t) < tok.isSpecial.count && tok.isSpecial[Int(t)] }
        let text = String(decoding: tok.decode(r.tokens.filter { !special($0) }), as: UTF8.self)
        let w = WordOrder.words(text)
        var plan = WordPlan(words: w.count, repeats: WordOrder.immediateRepeats(w), texts: [])
        guard o.orderShuffles > 0, w.count >= 2 else { return plan }
        let lead = r.tokens.first.map { special($0) ? tok.decode([$0]) : [] } ?? []
        plan.texts.append(lead + Array(w.joined(separator: " ").utf8))
        for k in 0..<o.orderShuffles {
            plan.texts.append(lead + Array(WordOrder.shuffled(w, seed: o.orderSeed, id: r.id, k: k).joined(separator: " ").utf8))
        }
        return plan
    }

    static func score(_ r: TokenRecord, nll: Double, tokens: Int, scorerTokens: [Int32], threshold: Double) -> SampleScore {
        let e = unigramEntropy(scorerTokens)
        var s = SampleScore(id: r.id, nll: nll, tokens: tokens, length: r.tokens.count, entropy: e, nfe: r.nfe,
                            stages: r.stages, degenerate: e < threshold)
        s.generated = r.unmaskStep.map { $0.reduce(0) { $0 + ($1 > 0 ? 1 : 0) } } ?? max(0, r.tokens.count - r.promptLength)
        return s
    }

    static func report(_ s: [SampleScore], _ d: DistinctNGrams, _ scorer: String, _ threshold: Double, _ part: GenerativeShard?) -> GenerativeReport {
        var r = GenerativeReport(samples: s, distinct: (1...DistinctNGrams.maxN).map { d.ratio($0) }, scorer: scorer, degenerateBelow: threshold)
        r.shard = part
        return r
    }

    static func refuseMasks(_ r: TokenRecord, _ h: StreamHeader) throws {
        let m = h.special.mask
        guard m >= 0 else { return }
        let n = r.tokens.reduce(0) { $0 + ($1 == m ? 1 : 0) }
        if n > 0 {
            throw ToolError("sample \(r.id) still has \(n) [MASK] token\(n == 1 ? "" : "s"); score finished samples (the output of draft or refine, not remask)")
        }
    }

    static func requireTokenizer(_ t: BPETokenizer, matches fingerprint: UInt64, vocab: Int, what: String) throws {
        if t.vocabSize != vocab || (fingerprint != 0 && t.fingerprint != fingerprint) {
            throw UsageError("tokenizer (fingerprint \(hex(t.fingerprint)), vocabulary \(t.vocabSize)) is not the one of \(what): fingerprint \(hex(fingerprint)), vocabulary \(vocab)")
        }
    }
}
