// A two-qubit entangler with one free angle: `qiz run examples/bell_angle.qasm --param theta=...`
// theta = pi/2 gives the Bell state (00 and 11 about half each); theta = 0 gives 00 only.
OPENQASM 3.0;
include "stdgates.inc";

input angle theta;
qubit[2] q;
bit[2] c;

ry(theta) q[0];
cx q[0], q[1];
c = measure q;
