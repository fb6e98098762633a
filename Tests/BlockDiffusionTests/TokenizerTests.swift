import Foundation
import XCTest
@testable import BlockDiffusion

/// Fixtures in Fixtures/tokenizer come from Tests/scripts/make_tokenizer_fixtures.py: expected ids
/// from HF `tokenizers` and `tiktoken` for three tokenizers (trained by us, trained by HF, GPT-2
/// excerpt) over adversarial inputs and a real-text sample.
final class TokenizerTests: XCTestCase {
    static let dir: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("tokenizer")
    static func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    static let cases: [String: [UInt8]] = {
        let data = try! Data(contentsOf: dir.appendingPathComponent("cases.json"))
        var out = [String: [UInt8]]()
        for (k, v) in try! JSONSerialization.jsonObject(with: data) as! [String: String] {
            out[k] = Array(Data(base64Encoded: v)!)
        }
        out["sample"] = Array(try! Data(contentsOf: dir.appendingPathComponent("sample.txt")))
        return out
    }()

    static let expected: [String: [String: [Int32]]] = {
        let data = try! Data(contentsOf: dir.appendingPathComponent("expected.json"))
        let obj = try! JSONSerialization.jsonObject(with: data) as! [String: [String: [Int]]]
        return obj.mapValues { $0.mapValues { $0.map { Int32($0) } } }
    }()

    func load(_ name: String) throws -> BPETokenizer { try BPETokenizer.load(path: Self.path(name)) }

    func checkParity(_ tok: BPETokenizer, _ key: String, mapIds: (Int32) -> Int32 = { $0 }) {
        let exp = Self.expected[key]!
        XCTAssertEqual(Set(exp.keys), Set(Self.cases.keys))
        for (name, bytes) in Self.cases.sorted(by: { $0.key < $1.key }) {
            let got = tok.encode(bytes).map(mapIds)
            let want = exp[name]!
            if got != want {
                let i = (0..<min(got.count, want.count)).first { got[$0] != want[$0] } ?? min(got.count, want.count)
                XCTFail("\(key)/\(name): ids differ at \(i) (got \(got.count) ids, want \(want.count)): got \(Array(got[i..<min(got.count, i + 5)])) want \(Array(want[i..<min(want.count, i + 5)]))")
            }
            XCTAssertEqual(tok.decode(tok.encode(bytes)), bytes, "\(key)/\(name): decode round trip")
        }
    }

    func testParityTrainedByUs() throws { checkParity(try load("ours.json"), "ours") }
    func testParityTrainedByHF() throws { checkParity(try load("hf.json"), "hf") }

    func testParityGPT2Excerpt() throws {
        let tok = try load("gpt2_excerpt.json")
        let ids = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.dir.appendingPathComponent("gpt2_ids.json"))) as! [Int]
        XCTAssertEqual(ids.count, tok.vocabSize)
        checkParity(tok, "gpt2") { Int32(ids[Int($0)]) }
    }

    /// Our trainer learns exactly HF's merges on the same text (hf.json was trained by HF), and
    /// does so deterministically and independently of the thread count.
    func testTrainerMatchesHFAndIsDeterministic() throws {
        let hf = try load("hf.json")
        var trainer = BPETrainer(vocabSize: hf.vocabSize + 3)
        var results = [BPETokenizer]()
        for threads in [1, 2] {
            trainer.threads = threads
            results.append(try trainer.train(files: [Self.path("sample.txt")], format: .text))
        }
        let ours = results[0]
        XCTAssertEqual(ours.merges.count, hf.merges.count)
        for (k, (m, h)) in zip(ours.merges, hf.merges).enumerated() where m != h {
            XCTFail("merge \(k): ours (\(ours.tokenString(m.left)), \(ours.tokenString(m.right))) HF (\(hf.tokenString(h.left)), \(hf.tokenString(h.right)))")
            break
        }
        for id in 0..<hf.vocabSize { XCTAssertEqual(ours.tokenBytes[id], hf.tokenBytes[id]) }
        XCTAssertEqual(results[1].fingerprint, ours.fingerprint)
        XCTAssertEqual(try load("ours.json").fingerprint, ours.fingerprint, "ours.json was trained by the CLI on the same sample")
        // Id layout: specials last, mask = V-1.
        XCTAssertEqual(ours.vocabSize, hf.vocabSize + 3)
        XCTAssertEqual(ours.special, SpecialTokens(bos: Int32(hf.vocabSize), eos: Int32(hf.vocabSize), mask: Int32(hf.vocabSize + 2), pad: Int32(hf.vocabSize + 1)))
    }

    func testTrainerTieBreakAndIdReuse() throws {
        // "ab" and "cd" both occur twice: the pair of older ids (a,b) wins the tie.
        var words = BPETrainer.WordCounts()
        words.add(document: Array("ab cd ab cd".utf8))
        let tok = try BPETrainer(vocabSize: 256 + 3 + 1).train(words)
        XCTAssertEqual(tok.merges.count, 1)
        XCTAssertEqual(tok.tokenBytes[256], Array("ab".utf8))
        // Too small a vocabulary is refused.
        XCTAssertThrowsError(try BPETrainer(vocabSize: 258).train(words))
    }

    func testHFJSONRoundTripKeepsFingerprint() throws {
        for name in ["ours.json", "hf.json", "gpt2_excerpt.json"] {
            let tok = try load(name)
            let again = try BPETokenizer.fromHFJSON(tok.hfJSON(), source: name, appendMissingSpecials: false)
            XCTAssertEqual(again.fingerprint, tok.fingerprint, name)
            XCTAssertEqual(again.tokenBytes, tok.tokenBytes, name)
        }
        // Fingerprints tell tokenizers apart.
        XCTAssertNotEqual(try load("ours.json").fingerprint, try load("hf.json").fingerprint)
    }

    func testVocabAndMergesImport() throws {
        let tok = try load("hf.json")
        var vocab = [String: Int]()
        for id in 0..<tok.vocabSize { vocab[tok.tokenString(Int32(id))] = id }
        let merges = "#version: 0.2\n" + tok.merges.map { tok.tokenString($0.left) + " " + tok.tokenString($0.right) }.joined(separator: "\n") + "\n"
        let imported = try BPETokenizer.fromVocabAndMerges(vocab: JSONSerialization.data(withJSONObject: vocab),
                                                          merges: Data(merges.utf8), source: "test")
        XCTAssertEqual(imported.vocabSize, tok.vocabSize + 2, "<|endoftext|> and [MASK] appended")
        XCTAssertEqual(imported.maskId, Int32(tok.vocabSize + 1))
        XCTAssertEqual(imported.padId, imported.eosId)
        let sample = Self.cases["sample"]!
        XCTAssertEqual(imported.encode(sample), tok.encode(sample))
    }

    /// Merges derived from tiktoken ranks: each token splits into the two parts that BPE with
    /// only lower ranks leaves.
    func testTiktokenImportDerivesMerges() throws {
        var lines = (0..<256).map { "\(Data([UInt8($0)]).base64EncodedString()) \($0)" }
        for (i, t) in ["bc", "ab", "abc", "abcbc"].enumerated() { lines.append("\(Data(t.utf8).base64EncodedString()) \(256 + i)") }
        let tok = try BPETokenizer.fromTiktoken(Data(lines.joined(separator: "\n").utf8), source: "test")
        let s = { (m: (left: Int32, right: Int32, result: Int32)) in [tok.tokenBytes[Int(m.left)], tok.tokenBytes[Int(m.right)]].map { String(decoding: $0, as: UTF8.self) } }
        XCTAssertEqual(tok.merges.map(s), [["b", "c"], ["a", "b"], ["a", "bc"], ["abc", "bc"]])
        XCTAssertEqual(tok.vocabSize, 262)
        XCTAssertEqual(tok.encode(Array("abcbc".utf8)), [259])
        XCTAssertEqual(tok.eosId, 260); XCTAssertEqual(tok.maskId, 261)
        // Gaps and garbage are refused.
        XCTAssertThrowsError(try BPETokenizer.fromTiktoken(Data("YQ== 1\n".utf8), source: "gap"))
        XCTAssertThrowsError(try BPETokenizer.fromTiktoken(Data([0xFF, 0x00, 0x13]), source: "garbage"))
    }

    func testRandomBytesRoundTrip() throws {
        let toks = [try load("ours.json"), try load("hf.json"), try load("gpt2_excerpt.json")]
        var rng = SplitMix(seed: 7)
        for round in 0..<60 {
            let n = Int(rng.next() % 600)
            // Mix uniform bytes with ASCII-heavy text so that both paths of the scanner are hit.
            let bytes: [UInt8] = (0..<n).map { _ in
                let r = rng.next()
                let pool = Array(" aZ'\n\t0.é".utf8)
                return r % 3 == 0 ? UInt8(truncatingIfNeeded: r >> 8) : pool[Int((r >> 8) % UInt64(pool.count))]
            }
            for tok in toks {
                let ids = tok.encode(bytes)
                XCTAssertTrue(tok.isValid(ids))
                XCTAssertEqual(tok.decode(ids), bytes, "round \(round)")
            }
        }
    }

    /// The heap merger (long pieces) and the naive merger (short pieces) give the same ids.
    func testHeapAndNaiveMergersAgree() throws {
        let tok = try load("gpt2_excerpt.json")
        let enc = tok.makeEncoder()
        var rng = SplitMix(seed: 3)
        let alphabet = Array("aabbcthe ingeds".utf8)
        for _ in 0..<200 {
            let n = 2 + Int(rng.next() % 120)
            let bytes = (0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            var a = bytes.map { tok.byteToId[Int($0)] }
            var b = a
            enc.mergeNaive(&a)
            enc.mergeWithHeap(&b)
            XCTAssertEqual(a, b)
        }
    }

    /// The parallel encoder cuts big documents; the ids must not change.
    func testParallelEncoderMatchesSerial() throws {
        let tok = try load("ours.json")
        let sample = Self.cases["sample"]!
        let docs = [sample, Array(sample[0..<1000]), [], Self.cases["random_bytes"]!, sample + sample]
        let serial = docs.map { tok.encode($0) }
        for threads in [1, 2, 3] {
            let got = ParallelEncoder(tok, threads: threads).encode(docs)
            XCTAssertEqual(got.count, serial.count)
            for (k, (g, s)) in zip(got, serial).enumerated() {
                XCTAssertTrue(g == s, "threads \(threads) document \(k): \(g.count) ids vs \(s.count) serially")
            }
        }
        let cuts = ParallelEncoder.safeCuts(sample, target: 5000)
        XCTAssertGreaterThan(cuts.count, 10)
        var pieced = [Int32]()
        for k in 0..<(cuts.count - 1) { pieced += tok.encode(Array(sample[cuts[k]..<cuts[k + 1]])) }
        if pieced != serial[0] {
            let i = (0..<min(pieced.count, serial[0].count)).first { pieced[$0] != serial[0][$0] } ?? 0
            XCTFail("cut encoding differs at id \(i): \(pieced[max(0, i - 3)..<min(pieced.count, i + 3)].map { tok.tokenString($0) }) vs \(serial[0][max(0, i - 3)..<min(serial[0].count, i + 3)].map { tok.tokenString($0) })")
        }
    }

    /// Counting a big document on 2 threads (cut at safe points) gives the serial counts.
    func testParallelWordCountsMatchSerial() {
        var big = [UInt8]()
        for _ in 0..<9 { big += Self.cases["sample"]! + Array(" \n".utf8) }
        XCTAssertGreaterThan(big.count, 1 << 20)
        var serial = BPETrainer.WordCounts()
        serial.add(document: big)
        let parallel = BPETrainer(vocabSize: 300).countParallel([big], workers: 2)
        XCTAssertEqual(parallel.distinct, serial.distinct)
        var a = [String: Int](), b = [String: Int]()
        for i in 0..<serial.distinct { a[ByteLevel.string(for: serial.table.key(i))] = serial.counts[i] }
        for i in 0..<parallel.distinct { b[ByteLevel.string(for: parallel.table.key(i))] = parallel.counts[i] }
        XCTAssertEqual(a, b)
    }

    func testPreTokenizerRules() {
        func split(_ s: String) -> [String] {
            let b = Array(s.utf8)
            return PreTokenizer.split(b).map { String(decoding: b[$0], as: UTF8.self) }
        }
        XCTAssertEqual(split("Hello world's  end\n\n x"), ["Hello", " world", "'s", " ", " end", "\n\n", " x"])
        XCTAssertEqual(split("a   "), ["a", "   "])
        XCTAssertEqual(split("a\t\tb"), ["a", "\t", "\t", "b"])
        XCTAssertEqual(split("!!'s 12ab"), ["!!'", "s", " 12", "ab"])
        XCTAssertEqual(split(""), [])
        // Invalid bytes join punctuation runs, like U+FFFD would.
        let bad: [UInt8] = [0x61, 0x20, 0xFF, 0x21, 0x80, 0x62]
        XCTAssertEqual(PreTokenizer.split(bad), [0..<1, 1..<5, 5..<6])
    }

    func testLoadErrors() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("toktest-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        XCTAssertThrowsError(try BPETokenizer.load(path: tmp.path)) { XCTAssertTrue("\($0)".contains("directory")) }
        XCTAssertThrowsError(try BPETokenizer.load(path: tmp.appendingPathComponent("missing.json").path))
        let garbage = tmp.appendingPathComponent("garbage.json")
        try Data([0x00, 0xFF, 0x7B]).write(to: garbage)
        XCTAssertThrowsError(try BPETokenizer.load(path: garbage.path))
        // A WordPiece-like file is refused with a reason.
        let wp = tmp.appendingPathComponent("wp.json")
        try Data(#"{"model":{"type":"WordPiece","vocab":{}}}"#.utf8).write(to: wp)
        XCTAssertThrowsError(try BPETokenizer.load(path: wp.path)) { XCTAssertTrue("\($0)".contains("WordPiece")) }
    }

    func testDocumentReaderFormats() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("toktest-doc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let f = tmp.appendingPathComponent("a.txt")
        try Data("one\r\n\ntwo\nthree".utf8).write(to: f)
        func all(_ fmt: DocumentFormat, _ path: String) throws -> [String] {
            let r = try DocumentReader(path: path, format: fmt)
            var out = [String]()
            while let d = try r.next() { out.append(String(decoding: d, as: UTF8.self)) }
            return out
        }
        XCTAssertEqual(try all(.lines, f.path), ["one", "two", "three"])
        XCTAssertEqual(try all(.text, f.path), ["one\r\n\ntwo\nthree"])
        let j = tmp.appendingPathComponent("a.jsonl")
        try Data("{\"text\": \"a\\u00e9\"}\n\n{\"text\": \"b\", \"id\": 3}\n".utf8).write(to: j)
        XCTAssertEqual(try all(.jsonl, j.path), ["aé", "b"])
        try Data("{\"text\": \"a\"}\nnot json\n".utf8).write(to: j)
        XCTAssertThrowsError(try all(.jsonl, j.path)) { XCTAssertTrue("\($0)".contains("line 2")) }
        XCTAssertThrowsError(try DocumentReader(path: tmp.path, format: .text)) { XCTAssertTrue("\($0)".contains("directory")) }
    }
}

/// Deterministic test randomness (the library's generator).
typealias SplitMix = SplitMix64

/// The `tokenize` executable: exit codes, bad inputs, atomic outputs, byte-exact round trips.
final class TokenizeCLITests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tokcli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    /// The built executable sits next to the test bundle.
    var binary: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [dir, dir.deletingLastPathComponent()].map { $0.appendingPathComponent("tokenize").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    @discardableResult
    func run(_ args: [String], stdin: [UInt8]? = nil) throws -> (code: Int32, out: [UInt8], err: String) {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary), "build the tokenize executable first (swift build)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        // stdin and stderr through files (no pipe deadlocks), stdout through a pipe.
        let errURL = tmp.appendingPathComponent(".stderr"), inURL = tmp.appendingPathComponent(".stdin")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: inURL.path, contents: Data(stdin ?? []))
        defer { try? FileManager.default.removeItem(at: errURL); try? FileManager.default.removeItem(at: inURL) }
        let errHandle = try FileHandle(forWritingTo: errURL), inHandle = try FileHandle(forReadingFrom: inURL)
        let outPipe = Pipe()
        p.standardOutput = outPipe; p.standardError = errHandle; p.standardInput = inHandle
        try p.run()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        try errHandle.close(); try inHandle.close()
        return (p.terminationStatus, Array(out), String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
    }

    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let u = tmp.appendingPathComponent(name)
        try Data(bytes).write(to: u)
        return u.path
    }

    var tokenizerPath: String { TokenizerTests.path("ours.json") }

    func testHelpShowsExamples() throws {
        for sub in ["train", "import", "encode", "decode", "stats"] {
            let r = try run([sub, "--help"])
            XCTAssertEqual(r.code, 0)
            XCTAssertTrue(String(decoding: r.out, as: UTF8.self).contains("Example"), sub)
        }
    }

    func testVocabSizeTooSmallExits64() throws {
        let f = try file("a.txt", Array("hello".utf8))
        let r = try run(["train", "--vocab-size", "258", "-o", tmp.appendingPathComponent("t.json").path, f])
        XCTAssertEqual(r.code, 64, r.err)
        XCTAssertTrue(r.err.contains("too small"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("t.json").path))
    }

    func testTrainBadInputs() throws {
        let out = tmp.appendingPathComponent("t.json").path
        // A directory instead of a file.
        var r = try run(["train", "--vocab-size", "300", "-o", out, tmp.path])
        XCTAssertEqual(r.code, 1); XCTAssertTrue(r.err.contains("directory"), r.err)
        // Empty input.
        r = try run(["train", "--vocab-size", "300", "-o", out, try file("empty.txt", [])])
        XCTAssertEqual(r.code, 1); XCTAssertTrue(r.err.contains("no text"), r.err)
        // Missing file.
        r = try run(["train", "--vocab-size", "300", "-o", out, tmp.appendingPathComponent("nope.txt").path])
        XCTAssertEqual(r.code, 1); XCTAssertTrue(r.err.contains("does not exist"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        // Malformed jsonl names the line.
        r = try run(["train", "--vocab-size", "300", "--input-format", "jsonl", "-o", out, try file("bad.jsonl", Array("{\"text\":\"a\"}\n{oops\n".utf8))])
        XCTAssertEqual(r.code, 1); XCTAssertTrue(r.err.contains("line 2"), r.err)
    }

    func testUnwritableOutputExits1AndLeavesNoFile() throws {
        let f = try file("a.txt", Array("hello hello world".utf8))
        // Output into a directory that does not exist.
        var r = try run(["train", "--vocab-size", "300", "-o", tmp.appendingPathComponent("no/such/dir/t.json").path, f])
        XCTAssertEqual(r.code, 1, r.err)
        // Output path that is an existing directory: the rename fails; no temp file may remain.
        let d = tmp.appendingPathComponent("outdir")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        r = try run(["train", "--vocab-size", "300", "-o", d.path, f])
        XCTAssertEqual(r.code, 1, r.err)
        r = try run(["encode", "-t", tokenizerPath, "-o", d.path, f])
        XCTAssertEqual(r.code, 1, r.err)
        let left = try FileManager.default.contentsOfDirectory(atPath: tmp.path).sorted()
        XCTAssertEqual(left, ["a.txt", "outdir"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: d.path), [])
    }

    func testTrainWritesTokenizerHFLoads() throws {
        let f = TokenizerTests.path("sample.txt")
        let out = tmp.appendingPathComponent("t.json").path
        let r = try run(["train", "--vocab-size", "280", "--input-format", "lines", "-o", out, f])
        XCTAssertEqual(r.code, 0, r.err)
        let tok = try BPETokenizer.load(path: out)
        XCTAssertEqual(tok.vocabSize, 280)
        XCTAssertEqual(tok.maskId, 279)
    }

    /// Binary garbage and invalid UTF-8 survive encode → decode byte for byte, the stream does
    /// not depend on the thread count, and the jsonl view keeps the exact bytes.
    func testEncodeDecodeRoundTripBinary() throws {
        var rng = SplitMix(seed: 11)
        var garbage = (0..<200_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        garbage += Array("\nplain text\n after \u{00e9}\n".utf8) + [0xFF, 0xC3]
        let f = try file("g.bin", garbage)
        let s1 = tmp.appendingPathComponent("g1.docs").path, s2 = tmp.appendingPathComponent("g2.docs").path
        XCTAssertEqual(try run(["encode", "-t", tokenizerPath, "--threads", "1", "-o", s1, f]).code, 0)
        XCTAssertEqual(try run(["encode", "-t", tokenizerPath, "--threads", "2", "-o", s2, f]).code, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: s1)), try Data(contentsOf: URL(fileURLWithPath: s2)))
        var r = try run(["decode", "-t", tokenizerPath, "-i", s1, "--raw"])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(r.out == garbage, "raw decode differs from the input")
        // Without -t the stream's recorded tokenizer path is used.
        r = try run(["decode", "-i", s1, "--raw"])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(r.out == garbage)
        r = try run(["decode", "-t", tokenizerPath, "-i", s1, "--jsonl"])
        XCTAssertEqual(r.code, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.dropLast())) as! [String: Any]
        XCTAssertEqual(obj["id"] as? Int, 0)
        XCTAssertEqual(Array(Data(base64Encoded: obj["bytes_base64"] as! String)!), garbage)
    }

    func testLinesAndJSONLDocuments() throws {
        let text = "first line\nsecond line\n\nthird  line \n"
        let f = try file("l.txt", Array(text.utf8))
        let s = tmp.appendingPathComponent("l.docs").path
        XCTAssertEqual(try run(["encode", "-t", tokenizerPath, "--input-format", "lines", "-o", s, f]).code, 0)
        var r = try run(["decode", "-t", tokenizerPath, "-i", s])
        XCTAssertEqual(String(decoding: r.out, as: UTF8.self), "first line\nsecond line\nthird  line \n")
        r = try run(["stats", s])
        XCTAssertTrue(String(decoding: r.out, as: UTF8.self).contains("records 3"), String(decoding: r.out, as: UTF8.self))
        // jsonl from stdin; ids per document as the library gives them.
        let tok = try BPETokenizer.load(path: tokenizerPath)
        r = try run(["encode", "-t", tokenizerPath, "--input-format", "jsonl", "--ids-text"],
                    stdin: Array("{\"text\": \"it's 42\"}\n{\"text\": \"na\\u00efve\\ttab\"}\n".utf8))
        XCTAssertEqual(r.code, 0, r.err)
        let want = [tok.encode(Array("it's 42".utf8)), tok.encode(Array("naïve\ttab".utf8))]
            .map { $0.map(String.init).joined(separator: " ") }.joined(separator: "\n") + "\n"
        XCTAssertEqual(String(decoding: r.out, as: UTF8.self), want)
        // Empty input: a valid stream with no records.
        r = try run(["encode", "-t", tokenizerPath, "-o", s, try file("e.txt", [])])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(String(decoding: try run(["stats", s]).out, as: UTF8.self).contains("records 0"))
    }

    func testDecodeRefusesAnotherTokenizer() throws {
        let f = try file("a.txt", Array("hello".utf8))
        let s = tmp.appendingPathComponent("a.docs").path
        XCTAssertEqual(try run(["encode", "-t", tokenizerPath, "-o", s, f]).code, 0)
        let r = try run(["decode", "-t", TokenizerTests.path("hf.json"), "-i", s])
        XCTAssertEqual(r.code, 1)
        XCTAssertTrue(r.err.contains("tokenizer mismatch"), r.err)
    }

    func testImportValidation() throws {
        var r = try run(["import", "-o", tmp.appendingPathComponent("x.json").path])
        XCTAssertEqual(r.code, 64)
        r = try run(["import", "--hf", TokenizerTests.path("hf.json"), "-o", tmp.appendingPathComponent("x.json").path])
        XCTAssertEqual(r.code, 0, r.err)
        let tok = try BPETokenizer.load(path: tmp.appendingPathComponent("x.json").path)
        XCTAssertEqual(tok.vocabSize, 1002)       // + <|endoftext|>, [MASK]
        XCTAssertEqual(tok.maskId, 1001)
        r = try run(["import", "--tiktoken", try file("bad.tiktoken", [0x00, 0xFF, 0x20, 0x31]), "-o", tmp.appendingPathComponent("y.json").path])
        XCTAssertEqual(r.code, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("y.json").path))
    }
}
