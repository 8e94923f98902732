// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/**
 * @title ProofLedger
 * @notice Timestamp authority of pol_chain: training runs, their checkpoint commitments,
 * model claims, challenges and verifier attestations (PROTOCOL section 3).
 *
 * @dev Commitments mirror `pol_chain/commitment.py` bit for bit:
 *
 * - `runId = keccak256(abi.encode(trainer, nonce))`, nonce = runs the trainer registered before;
 * - `leaf = keccak256(abi.encode(runId, index, step, checkpointDigest, segmentDigest))`;
 * - `acc_0 = 0`, `acc_{n+1} = keccak256(abi.encodePacked(acc_n, leaf_n))`;
 * - `runSeed = keccak256(abi.encode(block.chainid, address(this), runId))`;
 * - `challengeSeed = keccak256(abi.encode(blockhash(revealBlock), challengeId))`.
 *
 * Per run the contract stores O(1) words; every leaf is emitted in {CheckpointsCommitted},
 * so the full history is rebuildable from logs. A challenge may only be opened against a
 * finalized run, so its randomness (a block hash mined after the opening) is drawn after
 * every checkpoint is committed. A challenger may hold at most
 * {maxOpenUnbondedChallenges} open challenges opened without a bond, so a free challenge
 * cannot be spammed at the verifiers.
 */
contract ProofLedger is AccessControl, EIP712 {
    // ------------------------------------------------------------------ types

    /// @notice Lifecycle of a run. `Refuted` is permanent and dominates `Verified`.
    enum RunStatus {
        None,
        Registered,
        Finalized,
        Verified,
        Refuted
    }

    /// @notice Outcome of a challenge.
    enum ChallengeStatus {
        None,
        Open,
        Passed,
        Failed
    }

    /// @dev Storage layout of a run: `trainer`, `committedCount`, `registeredAt` and
    /// `status` share one slot, so a commit writes two slots (this one and the accumulator).
    struct RunRecord {
        address trainer;
        uint48 committedCount;
        uint40 registeredAt;
        RunStatus status;
        uint40 finalizedAt;
        bytes32 specDigest;
        bytes32 accumulator;
        bytes32 modelDigest;
    }

    struct ChallengeRecord {
        bytes32 runId;
        address challenger;
        uint64 openedAtBlock;
        uint16 quorum;
        ChallengeStatus status;
        uint128 bond;
        uint64 revealBlock;
        uint16 passVotes;
        uint16 failVotes;
        bytes32 seed;
    }

    /// @notice A run as returned by {getRun}.
    struct Run {
        address trainer;
        bytes32 specDigest;
        uint256 registeredAt;
        RunStatus status;
        uint256 committedCount;
        bytes32 accumulator;
        bytes32 modelDigest;
        uint256 finalizedAt;
    }

    /// @notice A claim on a model digest, as returned by {claimsOf}.
    struct Claim {
        bytes32 runId;
        address trainer;
        uint256 finalizedAt;
        RunStatus status;
    }

    /// @notice A challenge as returned by {getChallenge}.
    struct Challenge {
        bytes32 runId;
        address challenger;
        uint256 bond;
        uint256 openedAtBlock;
        uint256 revealBlock;
        bytes32 seed;
        uint256 quorum;
        uint256 passVotes;
        uint256 failVotes;
        ChallengeStatus status;
    }

    // ------------------------------------------------------------------ state

    mapping(address trainer => uint256) private _nonces;
    mapping(bytes32 runId => RunRecord) private _runs;
    mapping(bytes32 modelDigest => bytes32[] runIds) private _claims;
    mapping(uint256 challengeId => ChallengeRecord) private _challenges;
    mapping(bytes32 runId => uint256[] challengeIds) private _runChallenges;
    mapping(uint256 challengeId => mapping(address verifier => bool)) private _voted;
    mapping(address payee => uint256) private _pending;
    /// @dev Open unbonded challenges of each challenger, stored plus one once the account
    /// has challenged, so the slot never goes back to zero (a zero -> non-zero write costs
    /// 20,000 gas more; OpenZeppelin's ReentrancyGuard uses the same trick).
    mapping(address challenger => uint256) private _openUnbondedPlusOne;
    uint256 private _challengeCount;

    /// @dev Settings read together by {openChallenge}: one storage slot.
    struct Config {
        uint128 challengeBond;
        uint16 quorum;
        uint32 maxOpenUnbonded;
    }

    Config private _config = Config({challengeBond: 0, quorum: 1, maxOpenUnbonded: 8});

    // -------------------------------------------------------------- constants

    /// @notice Role allowed to attest challenge outcomes.
    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");

    /// @notice EIP-712 type hash of a verifier's signed attestation.
    bytes32 public constant ATTESTATION_TYPEHASH =
        keccak256("Attestation(uint256 challengeId,bool passed,bytes32 reportDigest,string reportCid)");

    /// @dev Blocks whose hash the EVM still serves (`blockhash` returns 0 beyond this).
    uint256 private constant _BLOCKHASH_WINDOW = 256;

    // ----------------------------------------------------------------- events

    /// @notice A trainer registered run `runId` (its `nonce`-th) with the spec `specDigest`.
    event RunRegistered(
        bytes32 indexed runId,
        address indexed trainer,
        bytes32 indexed specDigest,
        uint256 nonce,
        string specCid,
        uint256 registeredAt
    );

    /// @notice Leaves `firstIndex .. firstIndex + leaves.length - 1` of `runId` were committed.
    event CheckpointsCommitted(
        bytes32 indexed runId,
        uint256 indexed firstIndex,
        bytes32[] leaves,
        bytes32 newAccumulator,
        string manifestCid
    );

    /// @notice `runId` was finalized and claims `modelDigest` (claim number `claimIndex`).
    event RunFinalized(
        bytes32 indexed runId,
        bytes32 indexed modelDigest,
        address indexed trainer,
        string modelCid,
        uint256 claimIndex,
        uint256 finalizedAt
    );

    /// @notice A run's status changed by a challenge's resolution.
    event RunStatusChanged(bytes32 indexed runId, RunStatus oldStatus, RunStatus newStatus);

    /// @notice `challenger` opened challenge `challengeId` against `runId`.
    event ChallengeOpened(
        uint256 indexed challengeId,
        bytes32 indexed runId,
        address indexed challenger,
        uint256 bond,
        uint256 revealBlock,
        uint256 quorum
    );

    /// @notice The randomness of `challengeId` was fixed from the hash of `revealBlock`.
    event ChallengeRandomnessSealed(uint256 indexed challengeId, uint256 revealBlock, bytes32 seed);

    /// @notice The reveal block of `challengeId` fell out of the blockhash window; a new one was set.
    event ChallengeRandomnessReanchored(
        uint256 indexed challengeId,
        uint256 oldRevealBlock,
        uint256 newRevealBlock
    );

    /// @notice `verifier` voted on `challengeId` (relayed by `relayer`).
    event Attested(
        uint256 indexed challengeId,
        address indexed verifier,
        bool indexed passed,
        bytes32 reportDigest,
        string reportCid,
        address relayer
    );

    /// @notice `challengeId` reached its quorum.
    event ChallengeResolved(
        uint256 indexed challengeId,
        bytes32 indexed runId,
        bool passed,
        uint256 passVotes,
        uint256 failVotes
    );

    /// @notice `amount` wei of the bond of `challengeId` became withdrawable by `payee`.
    event BondCredited(address indexed payee, uint256 indexed challengeId, uint256 amount);

    /// @notice `payee` withdrew `amount` wei.
    event Withdrawn(address indexed payee, uint256 amount);

    /// @notice The quorum for challenges opened from now on changed.
    event QuorumSet(uint256 oldQuorum, uint256 newQuorum);

    /// @notice The bond for challenges opened from now on changed.
    event ChallengeBondSet(uint256 oldBond, uint256 newBond);

    /// @notice The most open unbonded challenges one challenger may hold changed.
    event MaxOpenUnbondedChallengesSet(uint256 oldLimit, uint256 newLimit);

    // ----------------------------------------------------------------- errors

    error ProofLedgerUnknownRun(bytes32 runId);
    error ProofLedgerNotTrainer(bytes32 runId, address account, address trainer);
    error ProofLedgerEmptyBatch(bytes32 runId);
    error ProofLedgerCheckpointGap(bytes32 runId, uint256 expectedIndex, uint256 firstIndex);
    error ProofLedgerCheckpointRewrite(bytes32 runId, uint256 expectedIndex, uint256 firstIndex);
    error ProofLedgerRunAlreadyFinalized(bytes32 runId);
    error ProofLedgerNothingCommitted(bytes32 runId);
    error ProofLedgerZeroModelDigest(bytes32 runId);
    error ProofLedgerRunNotChallengeable(bytes32 runId, RunStatus status);
    error ProofLedgerWrongBond(uint256 required, uint256 sent);
    error ProofLedgerUnknownChallenge(uint256 challengeId);
    error ProofLedgerSeedNotReady(uint256 challengeId, uint256 revealBlock, uint256 currentBlock);
    error ProofLedgerSeedExpired(uint256 challengeId, uint256 revealBlock);
    error ProofLedgerChallengeClosed(uint256 challengeId, ChallengeStatus status);
    error ProofLedgerAlreadyAttested(uint256 challengeId, address verifier);
    error ProofLedgerInvalidSignature();
    error ProofLedgerSignerNotVerifier(address signer);
    error ProofLedgerInvalidQuorum(uint256 quorum);
    error ProofLedgerBondTooLarge(uint256 bond);
    error ProofLedgerTooManyOpenChallenges(address challenger, uint256 open, uint256 limit);
    error ProofLedgerInvalidUnbondedLimit(uint256 limit);
    error ProofLedgerNothingToWithdraw(address payee);
    error ProofLedgerWithdrawFailed(address payee, uint256 amount);

    // ------------------------------------------------------------ constructor

    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (grants verifiers, sets quorum and bond).
    constructor(address admin) EIP712("ProofLedger", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ runs

    /**
     * @notice Register a new run for `msg.sender` before it trains; its id fixes its seed.
     * @return runId `keccak256(abi.encode(msg.sender, nonce))`.
     *
     * Emits a {RunRegistered} event.
     */
    function registerRun(bytes32 specDigest, string calldata specCid) external returns (bytes32 runId) {
        uint256 nonce = _nonces[msg.sender]++;
        runId = runIdOf(msg.sender, nonce);
        RunRecord storage run = _runs[runId];
        run.trainer = msg.sender;
        run.registeredAt = uint40(block.timestamp);
        run.status = RunStatus.Registered;
        run.specDigest = specDigest;
        emit RunRegistered(runId, msg.sender, specDigest, nonce, specCid, block.timestamp);
    }

    /**
     * @notice Append `leaves` as checkpoints `firstIndex ..` of `runId`, folding them into
     * the run's accumulator.
     *
     * Requirements:
     *
     * - the run exists and `msg.sender` is its trainer;
     * - the run is not finalized;
     * - `leaves` is not empty;
     * - `firstIndex` equals the number of leaves already committed (no gap, no rewrite).
     *
     * Emits one {CheckpointsCommitted} event carrying every leaf.
     */
    function commitCheckpoints(
        bytes32 runId,
        uint256 firstIndex,
        bytes32[] calldata leaves,
        string calldata manifestCid
    ) external {
        RunRecord storage run = _runs[runId];
        address trainer = run.trainer;
        if (trainer == address(0)) revert ProofLedgerUnknownRun(runId);
        if (trainer != msg.sender) revert ProofLedgerNotTrainer(runId, msg.sender, trainer);
        if (run.status != RunStatus.Registered) revert ProofLedgerRunAlreadyFinalized(runId);
        if (leaves.length == 0) revert ProofLedgerEmptyBatch(runId);
        uint256 expected = run.committedCount;
        if (firstIndex > expected) revert ProofLedgerCheckpointGap(runId, expected, firstIndex);
        if (firstIndex < expected) revert ProofLedgerCheckpointRewrite(runId, expected, firstIndex);

        bytes32 acc = _fold(run.accumulator, leaves);
        run.accumulator = acc;
        run.committedCount = uint48(expected + leaves.length);
        emit CheckpointsCommitted(runId, firstIndex, leaves, acc, manifestCid);
    }

    /**
     * @notice Declare `modelDigest` the final model of `runId` and claim it.
     *
     * Requirements:
     *
     * - the run exists and `msg.sender` is its trainer;
     * - the run is not finalized yet and has at least one committed checkpoint;
     * - `modelDigest` is not zero.
     *
     * Emits a {RunFinalized} event.
     */
    function finalizeRun(bytes32 runId, bytes32 modelDigest, string calldata modelCid) external {
        RunRecord storage run = _runs[runId];
        address trainer = run.trainer;
        if (trainer == address(0)) revert ProofLedgerUnknownRun(runId);
        if (trainer != msg.sender) revert ProofLedgerNotTrainer(runId, msg.sender, trainer);
        if (run.status != RunStatus.Registered) revert ProofLedgerRunAlreadyFinalized(runId);
        if (run.committedCount == 0) revert ProofLedgerNothingCommitted(runId);
        if (modelDigest == bytes32(0)) revert ProofLedgerZeroModelDigest(runId);

        run.status = RunStatus.Finalized;
        run.finalizedAt = uint40(block.timestamp);
        run.modelDigest = modelDigest;
        bytes32[] storage claims = _claims[modelDigest];
        claims.push(runId);
        emit RunFinalized(runId, modelDigest, msg.sender, modelCid, claims.length - 1, block.timestamp);
    }

    // ------------------------------------------------------------ challenges

    /**
     * @notice Challenge the finalized run `runId`; its randomness will be the hash of the
     * next block, unknown to everyone when this transaction is mined.
     * @return challengeId Counting from 1.
     *
     * Requirements:
     *
     * - the run is `Finalized` or `Verified` (a refuted run stays refuted);
     * - `msg.value` equals {challengeBond};
     * - without a bond, the caller holds fewer than {maxOpenUnbondedChallenges} open
     *   unbonded challenges (the count drops when one resolves).
     *
     * Emits a {ChallengeOpened} event.
     */
    function openChallenge(bytes32 runId) external payable returns (uint256 challengeId) {
        RunStatus status = _runs[runId].status;
        if (status == RunStatus.None) revert ProofLedgerUnknownRun(runId);
        if (status != RunStatus.Finalized && status != RunStatus.Verified) {
            revert ProofLedgerRunNotChallengeable(runId, status);
        }
        Config memory cfg = _config;
        if (msg.value != cfg.challengeBond) revert ProofLedgerWrongBond(cfg.challengeBond, msg.value);
        if (msg.value == 0) {
            uint256 stored = _openUnbondedPlusOne[msg.sender];
            uint256 open = stored == 0 ? 0 : stored - 1;
            if (open >= cfg.maxOpenUnbonded) {
                revert ProofLedgerTooManyOpenChallenges(msg.sender, open, cfg.maxOpenUnbonded);
            }
            _openUnbondedPlusOne[msg.sender] = open + 2;
        }

        challengeId = ++_challengeCount;
        uint256 revealBlock = block.number + 1;
        ChallengeRecord storage c = _challenges[challengeId];
        c.runId = runId;
        c.challenger = msg.sender;
        c.openedAtBlock = uint64(block.number);
        c.quorum = cfg.quorum;
        c.status = ChallengeStatus.Open;
        c.bond = uint128(msg.value);
        c.revealBlock = uint64(revealBlock);
        _runChallenges[runId].push(challengeId);
        emit ChallengeOpened(challengeId, runId, msg.sender, msg.value, revealBlock, cfg.quorum);
    }

    /**
     * @notice Snapshot the randomness of `challengeId` so it outlives the blockhash window;
     * if that window was missed, move the reveal block to the next block instead.
     * @return seed The sealed seed, or zero when the challenge was re-anchored.
     *
     * Requirements:
     *
     * - the challenge exists;
     * - its reveal block has been mined (`block.number > revealBlock`).
     *
     * May emit a {ChallengeRandomnessSealed} or a {ChallengeRandomnessReanchored} event.
     */
    function sealChallengeRandomness(uint256 challengeId) external returns (bytes32 seed) {
        ChallengeRecord storage c = _existingChallenge(challengeId);
        if (c.seed != bytes32(0)) return c.seed;
        uint256 revealBlock = c.revealBlock;
        if (block.number <= revealBlock) {
            revert ProofLedgerSeedNotReady(challengeId, revealBlock, block.number);
        }
        if (block.number - revealBlock > _BLOCKHASH_WINDOW) {
            uint256 newReveal = block.number + 1;
            c.revealBlock = uint64(newReveal);
            emit ChallengeRandomnessReanchored(challengeId, revealBlock, newReveal);
            return bytes32(0);
        }
        return _seal(c, challengeId, revealBlock);
    }

    /**
     * @notice Record the vote of `msg.sender`, a verifier, on `challengeId`.
     *
     * Requirements:
     *
     * - `msg.sender` holds {VERIFIER_ROLE} and has not voted on this challenge;
     * - the challenge is open and its randomness is sealed or sealable now.
     *
     * Emits an {Attested} event; may emit {ChallengeRandomnessSealed},
     * {ChallengeResolved}, {RunStatusChanged} and {BondCredited}.
     */
    function attest(uint256 challengeId, bool passed, bytes32 reportDigest, string calldata reportCid)
        external
        onlyRole(VERIFIER_ROLE)
    {
        _attest(msg.sender, challengeId, passed, reportDigest, reportCid);
    }

    /**
     * @notice Relay a verifier's EIP-712 signed {ATTESTATION_TYPEHASH} vote; anyone may call.
     *
     * Requirements: as {attest}, for the signer; the signature must be valid for this
     * contract on this chain.
     */
    function attestBySig(
        uint256 challengeId,
        bool passed,
        bytes32 reportDigest,
        string calldata reportCid,
        bytes calldata signature
    ) external {
        bytes32 structHash = keccak256(
            abi.encode(ATTESTATION_TYPEHASH, challengeId, passed, reportDigest, keccak256(bytes(reportCid)))
        );
        (address signer, ECDSA.RecoverError err, ) = ECDSA.tryRecover(_hashTypedDataV4(structHash), signature);
        if (err != ECDSA.RecoverError.NoError) revert ProofLedgerInvalidSignature();
        if (!hasRole(VERIFIER_ROLE, signer)) revert ProofLedgerSignerNotVerifier(signer);
        _attest(signer, challengeId, passed, reportDigest, reportCid);
    }

    /**
     * @notice Withdraw the bonds credited to `msg.sender` (pull payment).
     *
     * Emits a {Withdrawn} event.
     */
    function withdraw() external {
        uint256 amount = _pending[msg.sender];
        if (amount == 0) revert ProofLedgerNothingToWithdraw(msg.sender);
        _pending[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert ProofLedgerWithdrawFailed(msg.sender, amount);
    }

    // ----------------------------------------------------------------- admin

    /**
     * @notice Set the number of equal votes that resolves challenges opened from now on.
     *
     * Requirements: caller has `DEFAULT_ADMIN_ROLE`; `1 <= newQuorum <= 65535`.
     *
     * Emits a {QuorumSet} event.
     */
    function setQuorum(uint256 newQuorum) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newQuorum == 0 || newQuorum > type(uint16).max) revert ProofLedgerInvalidQuorum(newQuorum);
        uint256 old = _config.quorum;
        _config.quorum = uint16(newQuorum);
        emit QuorumSet(old, newQuorum);
    }

    /**
     * @notice Set the bond (wei) required to open a challenge from now on.
     *
     * Requirements: caller has `DEFAULT_ADMIN_ROLE`; the bond fits in 128 bits.
     *
     * Emits a {ChallengeBondSet} event.
     */
    function setChallengeBond(uint256 newBond) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newBond > type(uint128).max) revert ProofLedgerBondTooLarge(newBond);
        uint256 old = _config.challengeBond;
        _config.challengeBond = uint128(newBond);
        emit ChallengeBondSet(old, newBond);
    }

    /**
     * @notice Set the most open challenges without a bond one challenger may hold at a
     * time (a spam limit for chains whose bond is zero).
     *
     * Requirements: caller has `DEFAULT_ADMIN_ROLE`; `1 <= newLimit <= 2**32 - 1`.
     *
     * Emits a {MaxOpenUnbondedChallengesSet} event.
     */
    function setMaxOpenUnbondedChallenges(uint256 newLimit) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newLimit == 0 || newLimit > type(uint32).max) revert ProofLedgerInvalidUnbondedLimit(newLimit);
        uint256 old = _config.maxOpenUnbonded;
        _config.maxOpenUnbonded = uint32(newLimit);
        emit MaxOpenUnbondedChallengesSet(old, newLimit);
    }

    // ----------------------------------------------------------------- views

    /// @notice The number of runs `trainer` registered (its next registration's nonce).
    function nonces(address trainer) external view returns (uint256) {
        return _nonces[trainer];
    }

    /// @notice The run `runId`; reverts with {ProofLedgerUnknownRun} when it does not exist.
    function getRun(bytes32 runId) external view returns (Run memory) {
        RunRecord storage r = _runs[runId];
        if (r.trainer == address(0)) revert ProofLedgerUnknownRun(runId);
        return Run({
            trainer: r.trainer,
            specDigest: r.specDigest,
            registeredAt: r.registeredAt,
            status: r.status,
            committedCount: r.committedCount,
            accumulator: r.accumulator,
            modelDigest: r.modelDigest,
            finalizedAt: r.finalizedAt
        });
    }

    /// @notice The hash-chain accumulator of `runId` (zero before any commit).
    function accumulatorOf(bytes32 runId) external view returns (bytes32) {
        return _runs[runId].accumulator;
    }

    /// @notice The number of checkpoints committed for `runId`.
    function committedCount(bytes32 runId) external view returns (uint256) {
        return _runs[runId].committedCount;
    }

    /// @notice Every claim on `modelDigest`, in finalization order, with its run's status.
    function claimsOf(bytes32 modelDigest) external view returns (Claim[] memory claims) {
        bytes32[] storage ids = _claims[modelDigest];
        claims = new Claim[](ids.length);
        for (uint256 i = 0; i < ids.length; ++i) {
            RunRecord storage r = _runs[ids[i]];
            claims[i] = Claim(ids[i], r.trainer, r.finalizedAt, r.status);
        }
    }

    /// @notice The trainer and run of the earliest-finalized non-refuted claim on
    /// `modelDigest`; zeros when there is none.
    function ownerOf(bytes32 modelDigest) external view returns (address trainer, bytes32 runId) {
        bytes32[] storage ids = _claims[modelDigest];
        for (uint256 i = 0; i < ids.length; ++i) {
            RunRecord storage r = _runs[ids[i]];
            if (r.status != RunStatus.Refuted) return (r.trainer, ids[i]);
        }
        return (address(0), bytes32(0));
    }

    /// @notice The challenge `challengeId`; reverts with {ProofLedgerUnknownChallenge}.
    function getChallenge(uint256 challengeId) external view returns (Challenge memory) {
        ChallengeRecord storage c = _existingChallenge(challengeId);
        return Challenge({
            runId: c.runId,
            challenger: c.challenger,
            bond: c.bond,
            openedAtBlock: c.openedAtBlock,
            revealBlock: c.revealBlock,
            seed: c.seed,
            quorum: c.quorum,
            passVotes: c.passVotes,
            failVotes: c.failVotes,
            status: c.status
        });
    }

    /// @notice The ids of every challenge opened against `runId`, oldest first.
    function challengesOf(bytes32 runId) external view returns (uint256[] memory) {
        return _runChallenges[runId];
    }

    /// @notice The number of challenges opened so far (the latest challenge id).
    function challengeCount() external view returns (uint256) {
        return _challengeCount;
    }

    /// @notice Whether `verifier` has voted on `challengeId`.
    function hasAttested(uint256 challengeId, address verifier) external view returns (bool) {
        return _voted[challengeId][verifier];
    }

    /**
     * @notice The segment-selection seed of `challengeId`: the sealed value, or the value
     * sealing would store now. Reverts with {ProofLedgerSeedNotReady} while the reveal
     * block is not mined and with {ProofLedgerSeedExpired} when it must be re-anchored.
     */
    function challengeSeed(uint256 challengeId) external view returns (bytes32) {
        ChallengeRecord storage c = _existingChallenge(challengeId);
        if (c.seed != bytes32(0)) return c.seed;
        uint256 revealBlock = c.revealBlock;
        if (block.number <= revealBlock) revert ProofLedgerSeedNotReady(challengeId, revealBlock, block.number);
        if (block.number - revealBlock > _BLOCKHASH_WINDOW) revert ProofLedgerSeedExpired(challengeId, revealBlock);
        return challengeSeedOf(blockhash(revealBlock), challengeId);
    }

    /// @notice Quorum applied to challenges opened from now on.
    function quorum() external view returns (uint256) {
        return _config.quorum;
    }

    /// @notice Bond (wei) required to open a challenge.
    function challengeBond() external view returns (uint256) {
        return _config.challengeBond;
    }

    /// @notice The most open unbonded challenges one challenger may hold at a time.
    function maxOpenUnbondedChallenges() external view returns (uint256) {
        return _config.maxOpenUnbonded;
    }

    /// @notice The open challenges `challenger` opened without a bond.
    function openUnbondedChallenges(address challenger) external view returns (uint256) {
        uint256 stored = _openUnbondedPlusOne[challenger];
        return stored == 0 ? 0 : stored - 1;
    }

    /// @notice Wei withdrawable by `payee`.
    function pendingWithdrawal(address payee) external view returns (uint256) {
        return _pending[payee];
    }

    /// @notice The EIP-712 digest a verifier signs for {attestBySig}.
    function attestationDigest(uint256 challengeId, bool passed, bytes32 reportDigest, string calldata reportCid)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(ATTESTATION_TYPEHASH, challengeId, passed, reportDigest, keccak256(bytes(reportCid))))
        );
    }

    // ---------------------------------------------------------- pure helpers

    /// @notice `keccak256(abi.encode(runId, index, step, checkpointDigest, segmentDigest))`.
    function leafOf(bytes32 runId, uint256 index, uint256 step, bytes32 checkpointDigest, bytes32 segmentDigest)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(runId, index, step, checkpointDigest, segmentDigest));
    }

    /// @notice `keccak256(abi.encode(trainer, nonce))`.
    function runIdOf(address trainer, uint256 nonce) public pure returns (bytes32) {
        return keccak256(abi.encode(trainer, nonce));
    }

    /// @notice `keccak256(abi.encode(block.chainid, address(this), runId))`.
    function runSeedOf(bytes32 runId) external view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), runId));
    }

    /// @notice `keccak256(abi.encode(blockHash, challengeId))`.
    function challengeSeedOf(bytes32 blockHash, uint256 challengeId) public pure returns (bytes32) {
        return keccak256(abi.encode(blockHash, challengeId));
    }

    /// @notice Fold `leaves` into the accumulator `start` (`keccak256(acc ‖ leaf)` each).
    function foldLeaves(bytes32 start, bytes32[] calldata leaves) external pure returns (bytes32) {
        return _fold(start, leaves);
    }

    // --------------------------------------------------------------- internal

    function _fold(bytes32 acc, bytes32[] calldata leaves) private pure returns (bytes32 out) {
        assembly ("memory-safe") {
            mstore(0x00, acc)
            let ptr := leaves.offset
            let end := add(ptr, shl(5, leaves.length))
            for {} lt(ptr, end) { ptr := add(ptr, 0x20) } {
                mstore(0x20, calldataload(ptr))
                mstore(0x00, keccak256(0x00, 0x40))
            }
            out := mload(0x00)
        }
    }

    function _existingChallenge(uint256 challengeId) private view returns (ChallengeRecord storage c) {
        c = _challenges[challengeId];
        if (c.status == ChallengeStatus.None) revert ProofLedgerUnknownChallenge(challengeId);
    }

    function _seal(ChallengeRecord storage c, uint256 challengeId, uint256 revealBlock)
        private
        returns (bytes32 seed)
    {
        seed = challengeSeedOf(blockhash(revealBlock), challengeId);
        c.seed = seed;
        emit ChallengeRandomnessSealed(challengeId, revealBlock, seed);
    }

    function _attest(
        address verifier,
        uint256 challengeId,
        bool passed,
        bytes32 reportDigest,
        string calldata reportCid
    ) private {
        ChallengeRecord storage c = _existingChallenge(challengeId);
        if (c.status != ChallengeStatus.Open) revert ProofLedgerChallengeClosed(challengeId, c.status);
        if (_voted[challengeId][verifier]) revert ProofLedgerAlreadyAttested(challengeId, verifier);
        if (c.seed == bytes32(0)) {
            uint256 revealBlock = c.revealBlock;
            if (block.number <= revealBlock) {
                revert ProofLedgerSeedNotReady(challengeId, revealBlock, block.number);
            }
            if (block.number - revealBlock > _BLOCKHASH_WINDOW) {
                revert ProofLedgerSeedExpired(challengeId, revealBlock);
            }
            _seal(c, challengeId, revealBlock);
        }

        _voted[challengeId][verifier] = true;
        uint256 votes;
        if (passed) {
            votes = ++c.passVotes;
        } else {
            votes = ++c.failVotes;
        }
        emit Attested(challengeId, verifier, passed, reportDigest, reportCid, msg.sender);
        if (votes >= c.quorum) _resolve(c, challengeId, passed);
    }

    function _resolve(ChallengeRecord storage c, uint256 challengeId, bool passed) private {
        c.status = passed ? ChallengeStatus.Passed : ChallengeStatus.Failed;
        bytes32 runId = c.runId;
        RunRecord storage run = _runs[runId];
        emit ChallengeResolved(challengeId, runId, passed, c.passVotes, c.failVotes);

        RunStatus old = run.status;
        RunStatus next = passed ? (old == RunStatus.Refuted ? old : RunStatus.Verified) : RunStatus.Refuted;
        if (next != old) {
            run.status = next;
            emit RunStatusChanged(runId, old, next);
        }

        uint256 bond = c.bond;
        if (bond != 0) {
            address payee = passed ? run.trainer : c.challenger;
            _pending[payee] += bond;
            emit BondCredited(payee, challengeId, bond);
        } else {
            _openUnbondedPlusOne[c.challenger] -= 1; // counted (>= 2) when it was opened
        }
    }
}
