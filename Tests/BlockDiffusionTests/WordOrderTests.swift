import XCTest
import Foundation
@testable import BlockDiffusion

/// `score gen`'s word-order metrics: words, immediate repeats, order gain (checkpoint and command
/// scorers), and the shipped n-gram judge (pipelines/scorers/ngram.py).
extension GenScoreTests {
    func testWordsRepeatsAndShufflesByHand() {
        XCTAssertEqual(WordOrder.words("  The cat\nsat,  on\tthe mat "), ["The", "cat", "sat,", "on", "the", "mat"])
        XCTAssertEqual(WordOrder.words(""), [])
        XCTAssertEqual(WordOrder.immediateRepeats(["a", "A", "b", "b", "b", "a"]), 3)   // A|a, b|b, b|b
        XCTAssertEqual(WordOrder.immediateRepeats(["x"]), 0)
        let w = (0..<20).map { "w\($0)" }
        let s0 = WordOrder.shuffled(w, seed: 1, id: 7, k: 0)
        XCTAssertEqual(s0.sorted(), w.sorted())                                         // a permutation
        XCTAssertNotEqual(s0, w)
        XCTAssertEqual(s0, WordOrder.shuffled(w, seed: 1, id: 7, k: 0))                 // deterministic
        XCTAssertNotEqual(s0, WordOrder.shuffled(w, seed: 1, id: 7, k: 1))              // per shuffle,
        XCTAssertNotEqual(s0, WordOrder.shuffled(w, seed: 1, id: 8, k: 0))              // per sample,
        XCTAssertNotEqual(s0, WordOrder.shuffled(w, seed: 2, id: 7, k: 0))              // per seed
        // order gain = mean of the ratios, not the ratio of the means
        let st = WordStats(words: 5, repeats: 1, pplOrdered: 10, pplShuffled: [20, 40])
        XCTAssertEqual(st.orderGain, 3, accuracy: 1e-12)
        XCTAssertTrue(WordStats(words: 1, repeats: 0).orderGain.isNaN)
        XCTAssertTrue(WordStats(words: 3, repeats: 0, pplOrdered: .nan, pplShuffled: [2]).orderGain.isNaN)

        let samples = [
            SampleScore(id: 1, nll: 1, tokens: 1, length: 2, entropy: 5, nfe: 1, stages: [], degenerate: false, words: st),
            SampleScore(id: 2, nll: 1, tokens: 1, length: 2, entropy: 5, nfe: 1, stages: [], degenerate: false,
                        words: WordStats(words: 3, repeats: 2, pplOrdered: 4, pplShuffled: [4, 6])),
            SampleScore(id: 3, nll: 1, tokens: 1, length: 2, entropy: 5, nfe: 1, stages: [], degenerate: false,
                        words: WordStats(words: 1, repeats: 0)),
        ]
        let r = GenerativeReport(samples: samples, distinct: [], scorer: "t")
        XCTAssertEqual(r.orderGain, (3 + 1.25) / 2, accuracy: 1e-12)
        XCTAssertEqual(r.orderGainSamples, 2)
        XCTAssertEqual(r.repeatRate, 3.0 / 6, accuracy: 1e-12)                         // (1+2) / (4+2+0) pairs
        XCTAssertEqual(r.totalWords, 9)
        let j = try! JSONSerialization.jsonObject(with: Data(r.json(perSample: true).utf8)) as! [String: Any]
        XCTAssertEqual(j["order_gain"] as! Double, r.orderGain, accuracy: 1e-12)
        XCTAssertEqual(j["repeat_rate"] as! Double, 0.5, accuracy: 1e-12)
        XCTAssertEqual(j["order_shuffles"] as? Int, 2)
        let rows = j["per_sample"] as! [[String: Any]]
        XCTAssertEqual(rows[0]["order_gain"] as! Double, 3, accuracy: 1e-12)
        XCTAssertEqual(rows[1]["repeats"] as? Int, 2)
        XCTAssertTrue(rows[2]["order_gain"] is NSNull)
        XCTAssertTrue(r.table.contains("order gain"), r.table)
        // Without words (no tokenizer) the keys are null, not invented.
        let none = GenerativeReport(samples: [SampleScore(id: 1, nll: 1, tokens: 1, length: 2, entropy: 5, nfe: 1, stages: [], degenerate: false)],
                                    distinct: [], scorer: "t")
        let jn = try! JSONSerialization.jsonObject(with: Data(none.json(perSample: false).utf8)) as! [String: Any]
        XCTAssertTrue(jn["order_gain"] is NSNull)
        XCTAssertTrue(jn["repeat_rate"] is NSNull)
        XCTAssertFalse(none.table.contains("order gain"))
    }

    /// Checkpoint scorer: the ordered and shuffled texts are the words joined by spaces after the
    /// sample's BOS, encoded with the tokenizer and scored by the same checkpoint.
    func testOrderGainUnderCheckpointMatchesDirectScores() throws {
        let tok = try byteTokenizer(merges: [("t", "h"), ("th", "e")])
        let path = try makeARCheckpoint(ctx: 64, fingerprint: tok.fingerprint, vocab: tok.vocabSize, eos: tok.eosId)
        let text = "the cat the  cat\nsat sat on the mat"
        let rec = TokenRecord(id: 9, tokens: [tok.eosId] + tok.encode(Array(text.utf8)), nfe: 1)
        func input() throws -> TokenStreamReader {
            try stream([rec], vocab: tok.vocabSize, fingerprint: tok.fingerprint, mask: tok.maskId, eos: tok.eosId)
        }
        var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = 4; o.orderSeed = 3
        let r = try GenerativeScoring.run(input: try input(), scorer: .checkpoint(path), options: o)
        let s = try XCTUnwrap(r.samples.first?.words)
        let w = WordOrder.words(text)
        XCTAssertEqual(s.words, 9)
        XCTAssertEqual(s.repeats, 1)                                                   // sat sat (the cat the cat is not immediate)
        let ar = try ARCheckpointScorer(path: path)
        func ppl(_ words: [String]) -> Double {
            let (nll, n) = ar.score([tok.eosId] + tok.encode(Array(words.joined(separator: " ").utf8)))
            return exp(nll / Double(n))
        }
        XCTAssertEqual(s.pplOrdered, ppl(w), accuracy: 1e-9 * s.pplOrdered)
        XCTAssertEqual(s.pplShuffled.count, 4)
        for k in 0..<4 {
            XCTAssertEqual(s.pplShuffled[k], ppl(WordOrder.shuffled(w, seed: 3, id: 9, k: k)), accuracy: 1e-9 * s.pplShuffled[k])
        }
        XCTAssertEqual(r.orderGain, s.pplShuffled.map { $0 / s.pplOrdered }.reduce(0, +) / 4, accuracy: 1e-12)
        // The sample's own score is unchanged by the word metrics; 0 shuffles = no order gain.
        o.orderShuffles = 0
        let off = try GenerativeScoring.run(input: try input(), scorer: .checkpoint(path), options: o)
        XCTAssertEqual(off.samples[0].nll, r.samples[0].nll)
        XCTAssertEqual(off.samples[0].words?.repeats, 1)
        XCTAssertTrue(off.orderGain.isNaN)
        // Without the samples' tokenizer there are no words.
        let bare = try GenerativeScoring.run(input: try input(), scorer: .checkpoint(path), options: GenerativeOptions())
        XCTAssertNil(bare.samples[0].words)
        XCTAssertEqual(bare.samples[0].nll, r.samples[0].nll)
    }

    /// Command scorer: after each sample's request come its ordered and shuffled texts, with its id; the
    /// answers are matched back in order (a scorer whose NLL is the text's length in bytes).
    func testOrderGainUnderCommandSendsReorderedTexts() throws {
        let tok = try byteTokenizer()
        let log = dir + "/requests.jsonl"
        let cmd = try script("bytes.sh", """
            while IFS= read -r line; do
              printf '%s\\n' "$line" >> '\(log)'
              id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\\1/')
              printf '{"id":%s,"nll":%s,"tokens":2}\\n' "$id" "${#line}"
            done
            """)
        let texts = ["b a c", "single", "x  y\nz  w"]
        var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = 2
        let r = try GenerativeScoring.run(input: try byteStream(texts, tok: tok), scorer: .command(cmd), options: o)
        XCTAssertEqual(r.samples.map(\.id), [100, 101, 102])
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let reqs = try lines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        XCTAssertEqual(reqs.map { ($0["id"] as! NSNumber).intValue }, [100, 100, 100, 100, 101, 102, 102, 102, 102])
        let t = reqs.map { $0["text"] as! String }
        XCTAssertEqual(t[0], "<|endoftext|>b a c")
        XCTAssertEqual(t[1], "<|endoftext|>b a c")                                     // ordered
        XCTAssertEqual(t[2], "<|endoftext|>" + WordOrder.shuffled(["b", "a", "c"], seed: 1, id: 100, k: 0).joined(separator: " "))
        XCTAssertEqual(t[6], "<|endoftext|>x y z w")                                   // whitespace normalised
        // each sample's own NLL is its own request's; the order gain comes from its reordered texts
        XCTAssertEqual(r.samples[2].nll, Double(lines[5].utf8.count))
        let ordered = Double(lines[6].utf8.count), sh = [lines[7], lines[8]].map { Double($0.utf8.count) }
        XCTAssertEqual(r.samples[2].words?.orderGain ?? .nan, sh.map { exp(($0 - ordered) / 2) }.reduce(0, +) / 2, accuracy: 1e-9)
        XCTAssertNil(r.samples[1].words?.pplShuffled.first)                             // one word: nothing to shuffle
        XCTAssertEqual(r.samples[1].words?.words, 1)
    }

    /// The n-gram judge: a proper distribution, real text scores better in order than shuffled, and
    /// `score gen` reports that as an order gain well above 1.
    func testNGramJudgeSeesWordOrder() throws {
        let python = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let python else { throw XCTSkip("python3 not installed: the n-gram scorer cannot run") }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let ngram = root.appendingPathComponent("pipelines/scorers/ngram.py").path
        let fit = root.appendingPathComponent("data/heldout-narrative.jsonl").path
        guard FileManager.default.fileExists(atPath: ngram), FileManager.default.fileExists(atPath: fit) else {
            throw XCTSkip("pipelines/scorers/ngram.py or data/heldout-narrative.jsonl not found next to the sources")
        }
        // Probabilities of every vocabulary word sum to 1 in seen and unseen contexts.
        let check = Process()
        check.executableURL = URL(fileURLWithPath: python)
        check.arguments = ["-c", """
            import math, sys
            sys.path.insert(0, sys.argv[1])
            import ngram
            m = ngram.KneserNey(ngram.read_docs(sys.argv[2]), 3)
            for ctx in [("<s>", "<s>"), ("of", "the"), ("qqq", "zzz"), ("<s>", "and")]:
                s = math.fsum(m.prob(ctx, w) for w in m.vocab)
                assert abs(s - 1) < 1e-9, (ctx, s)
            """, (ngram as NSString).deletingLastPathComponent, fit]
        try check.run(); check.waitUntilExit()
        XCTAssertEqual(check.terminationStatus, 0, "n-gram probabilities do not sum to 1")

        // Real English (other text than the fit corpus) in order, and the same words already shuffled.
        let tok = try byteTokenizer()
        let real = ["And God said to Noah, I will make a covenant with you and with your children after you, and the waters shall not again become a flood.",
                    "Then the king called his servants and said to them, Go into the city and bring me the men who were there in the morning."]
        let salad = real.map { WordOrder.shuffled(WordOrder.words($0), seed: 11, id: 0, k: 0).joined(separator: " ") }
        var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = 3
        let cmd = "'\(python)' '\(ngram)' --fit '\(fit)'"
        let r = try GenerativeScoring.run(input: try byteStream(real, tok: tok), scorer: .command(cmd), options: o)
        let s = try GenerativeScoring.run(input: try byteStream(salad, tok: tok), scorer: .command(cmd), options: o)
        XCTAssertEqual(r.samples[0].tokens, WordOrder.words(real[0]).count + 3)    // words + "," "," "." split off
        XCTAssertGreaterThan(r.orderGain, 1.5, "real text: \(r.orderGain)")
        XCTAssertLessThan(s.orderGain, 1.3, "word salad: \(s.orderGain)")
        XCTAssertLessThan(r.genPPL, s.genPPL)
    }
}
