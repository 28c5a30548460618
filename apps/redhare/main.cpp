#include <cstdio>
int main() { std::puts("redhare"); return 0; }
