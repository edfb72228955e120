// Placeholder; replaced by the digits example.
int main() { return 0; }
