DROP INDEX files_directory;
DROP TABLE files;
