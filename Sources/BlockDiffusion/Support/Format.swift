// Number spellings shared by metadata writers and messages.
import Foundation

/// 16 hex digits (tokenizer fingerprints).
public func hex(_ x: UInt64) -> String { String(format: "%016llx", x) }
/// The shortest decimal that reads back to the same Double (metadata values).
func exact(_ x: Double) -> String { String(format: "%.17g", x) }
