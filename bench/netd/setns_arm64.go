package netd

// sysSetns is setns(2) on linux/arm64.
const sysSetns uintptr = 268
