// Placeholder; replaced by the energy example.
int main() { return 0; }
