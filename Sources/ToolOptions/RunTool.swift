// runTool: the one way in and out of every tool.
//
//   parse + validate (ArgumentParser, then the library's validate())   usage error → exit 64, usage on stderr
//   BD3_PARSE_ONLY=1 in the environment                                exit 0 here, before any file is opened
//   run()                                                               UsageError → 64, ToolError (and any other
//                                                                       error) → 1, ExitCode(n) → n
//   stdout flushed and checked at the end                               a failed write is exit 1, never 0
//
// A command group run without a subcommand (`tokenize`, `score`) is a usage error (exit 64, help on stderr);
// `--help` prints to stdout and exits 0.
import ArgumentParser
import BlockDiffusion
import Foundation

/// Parses the command line into `Root` or one of its subcommands, validates it and runs it; never returns.
public func runTool<Root: ParsableCommand>(_ root: Root.Type, arguments: [String]? = nil) -> Never {
    Runtime.prepareTool()
    let args = arguments ?? Array(CommandLine.arguments.dropFirst())
    var command: ParsableCommand
    do {
        command = try Root.parseAsRoot(args)
    } catch {
        exitAfterParse(Root.self, error)
    }
    let type = Swift.type(of: command)
    if type == Root.self && !Root.configuration.subcommands.isEmpty && Root.configuration.defaultSubcommand == nil {
        let names = Root.configuration.subcommands.map { $0._commandName }.joined(separator: ", ")
        fail(64, "Error: missing subcommand (one of: \(names))\n\n" + Root.helpMessage())
    }
    if ProcessInfo.processInfo.environment["BD3_PARSE_ONLY"] == "1" { leave(0) }
    do {
        try command.run()
    } catch let e as UsageError {
        usageFailure(Root.self, type, e.description)
    } catch let e as ValidationError {
        usageFailure(Root.self, type, e.message)
    } catch let e as ExitCode {
        finishStdout()
        leave(e.rawValue)
    } catch let e as ToolError {
        fail(1, "Error: \(e.description)")
    } catch {
        // ArgumentParser's own commands (--help, help SUBCOMMAND) report through errors thrown by run().
        exitAfterParse(Root.self, error)
    }
    finishStdout()
    leave(0)
}

/// ArgumentParser's verdict on the command line: help to stdout (exit 0, or 1 if stdout cannot take it),
/// everything else to stderr with its code (64 for usage mistakes, 1 for any other error).
private func exitAfterParse<Root: ParsableCommand>(_ root: Root.Type, _ error: Error) -> Never {
    let code = Root.exitCode(for: error)
    if code == .success {
        let text = Root.fullMessage(for: error)
        if !text.isEmpty { print(text) }
        finishStdout()
        leave(0)
    }
    Runtime.removeUnfinishedOutputs()
    Root.exit(withError: error)
}

private func usageFailure<Root: ParsableCommand>(_ root: Root.Type, _ command: ParsableCommand.Type, _ message: String) -> Never {
    let usage = Root.usageString(for: command)
    var names = [Root._commandName]
    if command != Root.self { names.append(command._commandName) }
    fail(64, "Error: \(message)\nUsage: \(usage)\n  See '\(names.joined(separator: " ")) --help' for more information.")
}

/// Everything printed to stdout must have reached it: a full disk or a closed pipe is exit 1.
private func finishStdout() {
    if fflush(stdout) != 0 || ferror(stdout) != 0 {
        let code = errno
        fail(1, "Error: cannot write stdout: \(String(cString: strerror(code == 0 ? EIO : code))) (is the disk full or the reading command gone? the output is incomplete)")
    }
}

private func fail(_ code: Int32, _ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    leave(code)
}

/// Every way out: outputs not committed by now are incomplete, so their temp files go.
private func leave(_ code: Int32) -> Never {
    Runtime.removeUnfinishedOutputs()
    exit(code)
}

/// Runs a library check inside a `validate()`: its UsageError becomes ArgumentParser's ValidationError, so the
/// message comes with the usage line and exit 64 (ArgumentParser would make any other error exit 1).
public func usage(_ check: () throws -> Void) throws {
    do { try check() } catch let e as UsageError { throw ValidationError(e.description) }
}
