// Optimisation pieces on flat Float buffers (spec §7): AdamW exactly as torch.optim.AdamW (single
// tensor path, float32), the two learning-rate schedules, global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_, and the EMA of models/ema.py.
import Foundation

/// torch.optim.AdamW over one flat parameter buffer. The moments are flat buffers allocated once.
public final class AdamW {
    public var beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.0   // Double, as torch's Python floats
    /// Number of optimizer steps taken (torch's `state['step']`).
    public private(set) var step = 0
    public let m: UnsafeMutableBufferPointer<Float>
    public let v: UnsafeMutableBufferPointer<Float>

    public init(count: Int) {
        m = .allocate(capacity: count); m.initialize(repeating: 0)
        v = .allocate(capacity: count); v.initialize(repeating: 0)
    }
    deinit { m.deallocate(); v.deallocate() }

    /// Restores the state saved in a checkpoint.
    public func restore(step: Int, m: [Float], v: [Float]) {
        precondition(m.count == self.m.count && v.count == self.v.count, "optimizer state size mismatch")
        self.step = step
        _ = self.m.update(fromContentsOf: m); _ = self.v.update(fromContentsOf: v)
    }

    /// One update with learning rate `lr`:
    ///   θ ← θ(1 − lr·wd); m ← m + (g − m)(1−β1); v ← β2 v + (1−β2) g²
    ///   θ ← θ − (lr/(1−β1^k)) · m / (√v/√(1−β2^k) + eps)
    /// in the same float32 operation order as torch's `_single_tensor_adamw`.
    public func update(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>, lr: Float) {
        precondition(parameters.count == m.count && gradients.count == m.count)
        step += 1
        let bc1 = 1 - pow(beta1, Double(step))
        let bc2 = 1 - pow(beta2, Double(step))
        let stepSize = Float(Double(lr) / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        let decay = Float(1 - Double(lr) * weightDecay)
        // torch forms 1−β in double (Python floats) and then rounds to float32; 1 − 0.999 in float32
        // would differ in the 5th digit.
        let b2 = Float(beta2), e = Float(eps)
        let oneMinusB1 = Float(1 - beta1), oneMinusB2 = Float(1 - beta2)
        for i in 0..<parameters.count {
            let g = gradients[i]
            var p = parameters[i]
            if weightDecay != 0 { p *= decay }
            m[i] += (g - m[i]) * oneMinusB1
            v[i] = v[i] * b2 + oneMinusB2 * g * g
            let denom = v[i].squareRoot() / bc2Sqrt + e
            p -= stepSize * (m[i] / denom)
            parameters[i] = p
        }
    }
}

/// Learning-rate schedules. `lr(afterSteps:)` takes the number of optimizer steps already taken
/// (0 for the first update) — the scheduler is stepped after each optimizer step, as in Lightning.
public enum LRSchedule: Equatable, Sendable {
    /// transformers' constant schedule with warmup: lr·min(1, k/warmup) (so the first update has lr 0 when warmup > 0).
    case constantWarmup(lr: Double, warmup: Int)
    /// timm CosineLRScheduler as configured by `cosine_decay_warmup.yaml`: linear warmup from 1e-6 over
    /// 10% of the steps, then cosine from lr down to 1e-6 over the rest.
    case cosine(lr: Double, totalSteps: Int, floor: Double = 1e-6)

    public func lr(afterSteps k: Int) -> Double {
        switch self {
        case .constantWarmup(let lr, let warmup):
            return warmup > 0 ? lr * min(1, Double(k) / Double(warmup)) : lr
        case .cosine(let lr, let total, let floor):
            let warm = Int(0.1 * Double(total))
            if k < warm { return floor + Double(k) * (lr - floor) / Double(warm) }
            let span = Double(max(total - warm, 1))
            let tt = Double(k - warm)
            if tt >= span { return floor }
            return floor + 0.5 * (lr - floor) * (1 + cos(Double.pi * tt / span))
        }
    }
}

public enum GradientClipping {
    /// Global L2 norm of `g` (accumulated in Double).
    public static func norm(_ g: UnsafeBufferPointer<Float>) -> Double {
        var s = 0.0
        for x in g { s += Double(x) * Double(x) }
        return s.squareRoot()
    }

    /// clip_grad_norm_: coef = min(1, maxNorm/(norm + 1e-6)); g ← g·coef. Returns the pre-clip norm.
    @discardableResult
    public static func clip(_ g: UnsafeMutableBufferPointer<Float>, maxNorm: Double) -> Double {
        let n = norm(UnsafeBufferPointer(g))
        let coef = min(1.0, maxNorm / (n + 1e-6))
        if coef < 1 { let c = Float(coef); for i in 0..<g.count { g[i] *= c } }
        return n
    }
}

/// Exponential moving average of the parameters (models/ema.py, use_num_updates=True):
/// n ← n+1; d = min(decay, (1+n)/(10+n)); s ← s − (1−d)(s − θ).
public final class EMA {
    public var decay: Double
    public private(set) var updates = 0
    public let shadow: UnsafeMutableBufferPointer<Float>

    public init(parameters: UnsafeBufferPointer<Float>, decay: Double = 0.9999) {
        self.decay = decay
        shadow = .allocate(capacity: parameters.count)
        _ = shadow.initialize(from: parameters)
    }
    deinit { shadow.deallocate() }

    public func restore(updates: Int, shadow values: [Float]) {
        precondition(values.count == shadow.count, "EMA size mismatch")
        self.updates = updates
        _ = shadow.update(fromContentsOf: values)
    }

    /// Re-seeds the shadow from the current parameters (after loading initial weights).
    public func reset(to parameters: UnsafeBufferPointer<Float>) {
        precondition(parameters.count == shadow.count)
        _ = shadow.update(fromContentsOf: parameters)
    }

    public func update(_ parameters: UnsafeBufferPointer<Float>) {
        updates += 1
        let d = min(decay, Double(1 + updates) / Double(10 + updates))
        let oneMinus = Float(1 - d)
        for i in 0..<shadow.count { shadow[i] -= oneMinus * (shadow[i] - parameters[i]) }
    }

    /// Swaps shadow and live parameters (call twice to swap back): validation runs on EMA weights.
    public func swap(with parameters: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<shadow.count { let t = shadow[i]; shadow[i] = parameters[i]; parameters[i] = t }
    }
}
