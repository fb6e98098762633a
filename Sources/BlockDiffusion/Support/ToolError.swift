// The two errors every tool speaks; `runTool` (Sources/ToolOptions) maps them to exit codes.
//   ToolError   a runtime failure (exit 1). `description` says what went wrong *and* what to do about it
//               (e.g. "... was the producer interrupted? Regenerate the file."). ToolFailure is the same type.
//   UsageError  a request that cannot be right whatever the inputs hold (exit 64), raised where the rule
//               lives — mostly in an options struct's validate() (PackOptions, DraftOptions, ...).
// `checkRange` and the `Limits` are the upper and lower bounds every size option is checked against, so
// that a huge value is a usage error and never an allocation abort or an overflow trap.

import Foundation

public struct ToolError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String
    public init(_ message: String) { self.description = message }
}

/// A runtime failure (exit 1); the same type as ToolError.
public typealias ToolFailure = ToolError

/// A mistake in the command line itself; the tools exit 64 with its description.
public struct UsageError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String
    public init(_ message: String) { self.description = message }
}

/// Upper bounds of the size options. Far above anything a CPU run uses, far below what overflows an
/// Int or asks the allocator for more than a machine has (a token canvas of maxLength × maxBatch Int32s
/// plus the model's activations).
public enum Limits {
    /// Tokens in one sequence (--length, --max-length, -L, --block-size, --stride).
    public static let length = 1 << 20
    /// Sequences in one batched forward (--batch).
    public static let batch = 1 << 14
    /// Samples per prompt (-n), draws per block (--samples).
    public static let count = 1 << 24
    /// Sampling steps, training steps, any "every N steps" interval.
    public static let steps = 1 << 30
    /// Worker threads.
    public static let threads = 1024
}

/// Throws a UsageError unless `value` is in `range`; the message names the option and the range.
public func checkRange<T: Comparable>(_ value: T, _ range: ClosedRange<T>, _ option: String, _ why: String = "") throws {
    guard range.contains(value) else {
        throw UsageError("\(option) must be in \(range.lowerBound)...\(range.upperBound)\(why.isEmpty ? "" : " (\(why))") (got \(value))")
    }
}

/// strerror as a Swift string, for messages.
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }
