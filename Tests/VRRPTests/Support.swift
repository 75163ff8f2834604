import ConntrackModel
import VRRP

/// Test helper: parses a literal address (test inputs are fixed literals).
func ip(_ text: String) -> VRRPAddress {
    guard let a = VRRPAddress(text) else { preconditionFailure("bad literal \(text)") }
    return a
}

let vrrpGroupV4 = ip("224.0.0.18")
let vrrpGroupV6 = ip("ff02::12")

/// The deterministic generator of the fuzz tests (one copy, in the model layer).
typealias SplitMix64 = ConntrackModel.SplitMix64

extension Result {
    var failureValue: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
    var successValue: Success? {
        if case .success(let s) = self { return s }
        return nil
    }
}
