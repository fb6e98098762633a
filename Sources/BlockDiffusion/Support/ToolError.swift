// ToolError: the one runtime-failure type every tool throws.
// A thrown ToolError makes the tool exit 1 and print `description`, which must say what went wrong
// *and* what to do about it (e.g. "... was the producer interrupted? Regenerate the file.").
// UsageError: a request that cannot be right whatever the inputs hold (exit 64), raised where the rule lives.

import Foundation

public struct ToolError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { self.description = message }
}

/// A mistake in the command line itself; the tools exit 64 with its description.
public struct UsageError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { self.description = message }
}

/// strerror as a Swift string, for messages.
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }
