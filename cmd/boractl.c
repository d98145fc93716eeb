/* boractl.c — operator console client (placeholder main until the console lands). */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "boractl: not built yet\n");
    return 1;
}
