// Progress line on stderr while a long sampling run works, only when stderr is a terminal (pipes and logs stay
// clean): "draft: 3/16 samples  812 tokens/s  ETA 0:42", redrawn at most twice a second, ended with a newline.
//
// Public API:
//   Progress(label:total:unit:force:)   enabled = stderr is a terminal (or `force`); total Int.max = unknown (no ETA)
//   advance(items:tokens:), finish()
import Foundation

public final class Progress {
    let label: String, unit: String
    let total: Int
    let enabled: Bool
    let start = DispatchTime.now().uptimeNanoseconds
    var lastDraw: UInt64 = 0
    public private(set) var items = 0
    public private(set) var tokens = 0

    public init(label: String, total: Int, unit: String = "samples", force: Bool = false) {
        self.label = label; self.total = total; self.unit = unit
        enabled = force || isatty(STDERR_FILENO) != 0
    }

    /// Adds finished items and the tokens they produced; redraws when half a second passed.
    public func advance(items n: Int, tokens t: Int) {
        items += n; tokens += t
        guard enabled else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        if now - lastDraw < 500_000_000 && items < total { return }
        lastDraw = now
        FileHandle.standardError.write(Data(("\r" + line(now: now) + "\u{1B}[K").utf8))
    }

    public func finish() {
        guard enabled, items > 0 else { return }
        FileHandle.standardError.write(Data(("\r" + line(now: DispatchTime.now().uptimeNanoseconds) + "\u{1B}[K\n").utf8))
    }

    func line(now: UInt64) -> String {
        let secs = max(1e-9, Double(now - start) * 1e-9)
        var s = "\(label): \(items)" + (total == Int.max ? "" : "/\(total)") + " \(unit)  \(Int((Double(tokens) / secs).rounded())) tokens/s"
        if items > 0 && items < total && total != Int.max {
            let eta = Int((secs / Double(items) * Double(total - items)).rounded())
            s += String(format: "  ETA %d:%02d", eta / 60, eta % 60)
        }
        return s
    }
}
