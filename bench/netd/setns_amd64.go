package netd

// sysSetns is setns(2) on linux/amd64.
const sysSetns uintptr = 308
