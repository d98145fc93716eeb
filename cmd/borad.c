/* borad.c — the appliance daemon (placeholder main until config and dataplane land). */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "borad: not built yet\n");
    return 1;
}
