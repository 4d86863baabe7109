"""Development tools that never ship: the benchmark, the fault-injection
matrix and soak, and the WAN emulator. They drive the app's engine and the
real Orthanc sandbox from outside, so the wheel and the bundle leave them out."""
