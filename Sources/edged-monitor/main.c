#include <stdio.h>
int main(void) { puts("edged-monitor"); return 0; }
