import Foundation
import XCTest

/// Checks the public-domain sample shipped in data/ (see data/README.md): it must stay valid
/// JSON Lines with a non-empty, cleaned "text" per line, small, and its held-out sets must not
/// leak into the training sample.
final class DataTests: XCTestCase {
    struct Document { let text: String; let source: String }

    /// Repository root, found from this file's location (Tests/BlockDiffusionTests/DataTests.swift).
    static let dataDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("data")
    static let files = ["sample.jsonl", "heldout-narrative.jsonl", "heldout-reference.jsonl"]

    func load(_ name: String) throws -> [Document] {
        let data = try Data(contentsOf: Self.dataDirectory.appendingPathComponent(name))
        let content = try XCTUnwrap(String(data: data, encoding: .utf8), "\(name) is not UTF-8")
        XCTAssertTrue(content.hasSuffix("\n"), "\(name): last line is not terminated (truncated?)")
        var docs: [Document] = []
        for (i, line) in content.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            let fields = try XCTUnwrap(object as? [String: Any], "\(name):\(i + 1) is not a JSON object")
            let text = try XCTUnwrap(fields["text"] as? String, "\(name):\(i + 1) has no string \"text\"")
            let source = try XCTUnwrap(fields["source"] as? String, "\(name):\(i + 1) has no string \"source\"")
            docs.append(Document(text: text, source: source))
        }
        return docs
    }

    func testFilesAreJSONLinesOfCleanedDocumentsOfSensibleLength() throws {
        for name in Self.files {
            let docs = try load(name)
            XCTAssertGreaterThan(docs.count, 10, name)
            for doc in docs {
                XCTAssertGreaterThanOrEqual(doc.text.utf8.count, 100, "\(name) \(doc.source): too short to be a document")
                XCTAssertEqual(doc.text, doc.text.trimmingCharacters(in: .whitespacesAndNewlines), doc.source)
                for bad in ["\r", "\t", " \n", "\n\n\n", "  "] {
                    XCTAssertFalse(doc.text.contains(bad), "\(name) \(doc.source) contains \(bad.debugDescription)")
                }
            }
            // Documents are chapters, scenes or entry groups: most are well over a kilobyte.
            let sizes = docs.map { $0.text.utf8.count }.sorted()
            XCTAssertGreaterThanOrEqual(sizes[sizes.count / 2], 1000, "\(name): median document too short")
            XCTAssertEqual(Set(docs.map(\.text)).count, docs.count, "\(name) repeats a document")
        }
    }

    func testSampleStaysUnderTwoMegabytes() throws {
        var total = 0
        for name in Self.files {
            let attributes = try FileManager.default.attributesOfItem(
                atPath: Self.dataDirectory.appendingPathComponent(name).path)
            total += (attributes[.size] as? Int) ?? Int.max
        }
        XCTAssertLessThan(total, 2_000_000)
    }

    func testHeldOutSetsShareNothingWithTheTrainingSample() throws {
        let train = try load("sample.jsonl")
        let trainTexts = Set(train.map(\.text)), trainSources = Set(train.map(\.source))
        for name in Self.files.dropFirst() {
            for doc in try load(name) {
                XCTAssertFalse(trainTexts.contains(doc.text), "\(name) \(doc.source) is also in sample.jsonl")
                XCTAssertFalse(trainSources.contains(doc.source), "\(name) \(doc.source) is also in sample.jsonl")
            }
        }
        // Held out by work, not by piece: no held-out play or book appears in training at all.
        let heldOutWorks = Set(try load("heldout-narrative.jsonl").map { work(of: $0.source) })
        XCTAssertEqual(heldOutWorks, ["shakespeare/tempest", "shakespeare/julius_caesar",
                                      "web/Ruth", "web/Jonah", "web/Tobit"])
        XCTAssertTrue(heldOutWorks.isDisjoint(with: train.map { work(of: $0.source) }))
    }

    /// "web/Ruth 2" -> "web/Ruth", "shakespeare/tempest/3" -> "shakespeare/tempest".
    func work(of source: String) -> String {
        if source.hasPrefix("web/"), let space = source.lastIndex(of: " ") {
            return String(source[..<space])
        }
        return source.split(separator: "/").prefix(2).joined(separator: "/")
    }
}
