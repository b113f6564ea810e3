-- Device search at a million devices: the dashboard's and the API's filters
-- on these columns read an index range in id order (keyset pages) and
-- count by index; last check-in times count online devices; history by
-- time lists the fleet's recent failures.
CREATE INDEX devices_hardware ON devices (hardware, id);
CREATE INDEX devices_region ON devices (region, id);
CREATE INDEX devices_family ON devices (family, id);
CREATE INDEX devices_release ON devices (release, id);
CREATE INDEX devices_last_seen ON devices (last_seen_ms, status);
CREATE INDEX devices_status ON devices (status);
CREATE INDEX device_history_at ON device_history (at_ms);
