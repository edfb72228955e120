// Placeholder; replaced by the two_moons example.
int main() { return 0; }
