/* A host-emulation build of the firmware: the same application code, with
 * stdout standing in for the radio. FAMILY selects the device family. */
#include <stdio.h>
#include <string.h>
#include "crc.h"

#ifndef FAMILY
#error "build with -DFAMILY=\"sensor\" or -DFAMILY=\"gateway\""
#endif

int main(void)
{
    const char *frame = FAMILY " telemetry v1";
    printf("%s crc=%04x\n", frame, crc16((const uint8_t *)frame, strlen(frame)));
    return 0;
}
