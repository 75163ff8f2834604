import KeepstateCLI

@main
struct KeepstateMain {
    static func main() async {
        await Keepstate.runMain()
    }
}
