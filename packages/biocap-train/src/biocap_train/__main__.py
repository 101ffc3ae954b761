from biocap_train.cli import main

main()
