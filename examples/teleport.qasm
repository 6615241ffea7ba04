// Teleportation with feed-forward: the state RY(theta)|0> moves from q[0] to q[2] through two
// mid-circuit measurements and the corrections they select. P(out = 1) = sin^2(theta / 2).
OPENQASM 3.0;
include "stdgates.inc";
input angle theta;
qubit[3] q;
bit[2] m;
bit[1] out;
ry(theta) q[0];
h q[1];
cx q[1], q[2];
cx q[0], q[1];
h q[0];
for int i in [0:1] { m[i] = measure q[i]; }
if (m[1]) x q[2];
if (m[0]) z q[2];
out[0] = measure q[2];
