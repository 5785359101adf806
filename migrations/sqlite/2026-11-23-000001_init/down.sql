DROP TABLE rooms;
DROP TABLE sessions;
